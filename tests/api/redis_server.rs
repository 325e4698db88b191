//! Real `redis-server` processes for the Redis tests: one server or a
//! three-master cluster on free loopback ports, which a test may kill and
//! restart on the same port.
//!
//! Each server runs under a tiny `sh` guard that kills it when our end of
//! its stdin closes — on `Drop`, and also when the test process dies
//! without unwinding — so no server outlives its test.
//!
//! Without `redis-server` the tests skip loudly; under `CI=true` they fail.

use std::io::Write;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Whether `redis-server` (and `redis-cli`) can run here; otherwise say so
/// loudly, or fail under `CI=true`.
pub fn available(test: &str) -> bool {
    let ok = ["redis-server", "redis-cli"].iter().all(|p| {
        Command::new(p)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{test}: redis-server/redis-cli missing and CI=true (install redis-server)");
        }
        eprintln!(
            "SKIPPED: {test}: redis-server/redis-cli not found (install redis-server to run it)"
        );
    }
    ok
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A free port whose cluster-bus port (`port + 10000`) is free too.
fn free_cluster_port() -> u16 {
    loop {
        let port = free_port();
        if port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
        // Ephemeral ports are often above 55,000: pick one from a lower band.
        let guess: u16 = rand::random_range(20_000..40_000);
        if TcpListener::bind(("127.0.0.1", guess)).is_ok()
            && TcpListener::bind(("127.0.0.1", guess + 10_000)).is_ok()
        {
            return guess;
        }
    }
}

fn fresh_dir(port: u16) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "qrlogin-redis-{}-{port}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `redis-server` with `args` until stdin closes, then kills it.
const GUARD: &str = r#"redis-server "$@" & r=$!; read _; kill -9 $r; wait $r"#;

/// One `redis-server` on a free port, in its own directory.
pub struct RedisServer {
    pub port: u16,
    dir: PathBuf,
    extra: Vec<String>,
    running: Option<(Child, ChildStdin)>,
}

impl RedisServer {
    /// A standalone server, or `None` (skipped) without redis-server.
    pub fn start(test: &str) -> Option<Self> {
        available(test).then(|| Self::spawn(free_port(), Vec::new()))
    }

    fn spawn(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            port,
            dir: fresh_dir(port),
            extra,
            running: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and directory: a `SAVE`d dump is
    /// loaded back, as after a real restart with persistence.
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "already running");
        let port = self.port.to_string();
        let dir = self.dir.to_string_lossy().into_owned();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(GUARD)
            .arg("sh")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "no", "--dir", &dir, "--loglevel", "warning"])
            .args(&self.extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let stdin = child.stdin.take().unwrap();
        self.running = Some((child, stdin));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(
                Instant::now() < deadline,
                "redis-server on {port} did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Remove the server's directory while it runs (it writes nothing there
    /// without `SAVE`): for a server that lives as long as the process.
    pub fn forget_dir(&self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Kill the server at once (no shutdown save), as a crash would.
    pub fn kill(&mut self) {
        if let Some((mut child, mut stdin)) = self.running.take() {
            let _ = stdin.write_all(b"\n");
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// `redis-cli -p PORT args…`: its stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .expect("run redis-cli");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Three masters, no replicas, every slot assigned.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start(test: &str) -> Option<Self> {
        if !available(test) {
            return None;
        }
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                let port = free_cluster_port();
                let extra = vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    format!("nodes-{port}.conf"),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ];
                RedisServer::spawn(port, extra)
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("run redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !nodes
            .iter()
            .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            assert!(Instant::now() < deadline, "cluster did not become ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(Self { nodes })
    }

    /// `redis+cluster://host1:port1,host2:port2,host3:port3`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}
