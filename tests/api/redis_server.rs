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
    /// A sentinel's configuration file (it rewrites it), for `--sentinel`.
    sentinel_conf: Option<PathBuf>,
    running: Option<(Child, ChildStdin)>,
}

impl RedisServer {
    /// A standalone server, or `None` (skipped) without redis-server.
    pub fn start(test: &str) -> Option<Self> {
        available(test).then(|| Self::spawn(free_port(), Vec::new()))
    }

    /// A standalone server with more `redis-server` arguments.
    pub fn start_with(test: &str, extra: &[&str]) -> Option<Self> {
        let extra = extra.iter().map(|a| (*a).to_owned()).collect();
        available(test).then(|| Self::spawn(free_port(), extra))
    }

    fn spawn(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            port,
            dir: fresh_dir(port),
            extra,
            sentinel_conf: None,
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
        let mut command = Command::new("sh");
        command.arg("-c").arg(GUARD).arg("sh");
        match &self.sentinel_conf {
            Some(conf) => command.arg(conf).arg("--sentinel"),
            None => command.args(["--save", "", "--appendonly", "no"]),
        };
        let mut child = command
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--dir", &dir, "--loglevel", "warning"])
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
        let mut command = Command::new("redis-cli");
        if let Some(i) = self.extra.iter().position(|a| a == "--requirepass") {
            command.env("REDISCLI_AUTH", &self.extra[i + 1]);
        }
        let out = command
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
    /// Three masters, no replicas.
    pub fn start(test: &str) -> Option<Self> {
        Self::start_with_replicas(test, 0)
    }

    /// Three masters with `replicas` replicas each.
    pub fn start_with_replicas(test: &str, replicas: usize) -> Option<Self> {
        if !available(test) {
            return None;
        }
        let nodes: Vec<RedisServer> = (0..3 * (1 + replicas))
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
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
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
        // Every replica in sync: one that never was is not eligible to be
        // promoted when its master dies.
        while !nodes.iter().all(|n| {
            let info = n.cli(&["INFO", "replication"]);
            info.contains("role:master") || info.contains("master_link_status:up")
        }) {
            assert!(Instant::now() < deadline, "replicas did not sync");
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

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made
/// with the `openssl` CLI in a fresh directory; and a second, unrelated CA.
pub struct TestCerts {
    pub dir: PathBuf,
}

impl TestCerts {
    pub fn make() -> Self {
        let dir = fresh_dir(0);
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(&dir)
                .output()
                .expect("run openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            run(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN={ca}"),
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
            ]);
        }
        for (name, ext) in [
            ("server", "subjectAltName=IP:127.0.0.1"),
            ("client", "extendedKeyUsage=clientAuth"),
        ] {
            run(&[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                &format!("/CN={name}"),
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.csr"),
            ]);
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            run(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &format!("{name}.ext"),
                "-out",
                &format!("{name}.pem"),
            ]);
        }
        Self { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

impl Drop for TestCerts {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RedisServer {
    /// A server that also listens with TLS on `tls_port` (the plain port
    /// stays for `cli`), asking clients for a certificate from the same CA.
    pub fn start_tls(test: &str, certs: &TestCerts) -> Option<(Self, u16)> {
        if !available(test) {
            return None;
        }
        let tls_port = free_port();
        let path = |f: &str| certs.path(f).to_string_lossy().into_owned();
        let extra = vec![
            "--tls-port".into(),
            tls_port.to_string(),
            "--tls-cert-file".into(),
            path("server.pem"),
            "--tls-key-file".into(),
            path("server.key"),
            "--tls-ca-cert-file".into(),
            path("ca.pem"),
            "--tls-auth-clients".into(),
            "yes".into(),
        ];
        Some((Self::spawn(free_port(), extra), tls_port))
    }
}

/// A master, one replica and three sentinels watching them as `mymaster`
/// (down after 1 s), all on free ports.
pub struct RedisSentinels {
    pub master: RedisServer,
    pub replica: RedisServer,
    pub sentinels: Vec<RedisServer>,
}

impl RedisSentinels {
    pub fn start(test: &str) -> Option<Self> {
        if !available(test) {
            return None;
        }
        let master = RedisServer::spawn(free_port(), Vec::new());
        let replica = RedisServer::spawn(
            free_port(),
            vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master.port.to_string(),
            ],
        );
        let sentinels = (0..3)
            .map(|_| {
                let port = free_port();
                let dir = fresh_dir(port);
                let conf = dir.join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor mymaster 127.0.0.1 {} 2\n\
                         sentinel down-after-milliseconds mymaster 1000\n\
                         sentinel failover-timeout mymaster 4000\n\
                         sentinel parallel-syncs mymaster 1\n",
                        master.port
                    ),
                )
                .unwrap();
                let mut sentinel = RedisServer {
                    port,
                    dir,
                    extra: Vec::new(),
                    sentinel_conf: Some(conf),
                    running: None,
                };
                sentinel.restart();
                sentinel
            })
            .collect();
        let set = Self {
            master,
            replica,
            sentinels,
        };
        // The replica in sync, and every sentinel seeing it and the others.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(set
            .replica
            .cli(&["INFO", "replication"])
            .contains("master_link_status:up")
            && set.sentinels.iter().all(|s| {
                let info = s.cli(&["SENTINEL", "MASTER", "mymaster"]);
                let lines: Vec<&str> = info.lines().map(str::trim).collect();
                let field = |name: &str| {
                    lines
                        .iter()
                        .position(|l| *l == name)
                        .and_then(|i| lines.get(i + 1).copied())
                };
                field("num-slaves") == Some("1") && field("num-other-sentinels") == Some("2")
            }))
        {
            assert!(Instant::now() < deadline, "sentinels did not settle");
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(set)
    }

    /// `redis+sentinel://h1:p1,h2:p2,h3:p3/mymaster`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        format!("redis+sentinel://{}/mymaster", hosts.join(","))
    }

    /// The port the sentinels name as master now.
    pub fn master_port(&self) -> Option<u16> {
        let out = self.sentinels[0].cli(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster"]);
        out.lines().nth(1)?.trim().parse().ok()
    }
}
