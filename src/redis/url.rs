//! `QRLOGIN_REDIS_URL`: its forms (one server, a cluster, a master named by
//! Sentinel, each with a TLS variant) and how the logs may show it.

/// Where Redis is, parsed from `QRLOGIN_REDIS_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One server (`redis://…` or `rediss://…`).
    Single(String),
    /// Cluster seed nodes, each as a `redis://` or `rediss://` URL.
    Cluster(Vec<String>),
    /// A master found through Sentinel.
    Sentinel(SentinelTarget),
}

/// `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>[/db]`: the
/// sentinels to ask, the master's name, and how to talk to the data nodes
/// (the URL's credentials are theirs, as with a replicated Redis the
/// sentinels usually run without a password).
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelTarget {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `rediss+sentinel://`: TLS to the sentinels and the data nodes.
    pub tls: bool,
}

/// Never shows the password, even in a test's failure message.
impl std::fmt::Debug for SentinelTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelTarget")
            .field("sentinels", &self.sentinels)
            .field("master", &self.master)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Percent-decoding of a URL's user or password (`%40` for `@`).
fn decode(part: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| "the credentials are not UTF-8".to_owned())
}

/// `host:port` (IPv6 in brackets), with `default` when the port is left out.
fn host_port(node: &str, default: u16) -> Result<(String, u16), String> {
    let (host, port) = match node.rsplit_once(':') {
        Some((h, p)) if !p.contains(']') => {
            let port = p
                .parse::<u16>()
                .map_err(|_| format!("{node:?}: the port is not a number"))?;
            (h, port)
        }
        _ => (node, default),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{node:?} names no host"));
    }
    Ok((host.to_owned(), port))
}

impl SentinelTarget {
    fn parse(rest: &str, tls: bool) -> Result<Self, String> {
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (username, password) = match auth {
            None => (None, None),
            Some(auth) => {
                let (user, pass) = match auth.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (auth, None),
                };
                let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
                let pass = pass.filter(|p| !p.is_empty()).map(decode).transpose()?;
                (user, pass)
            }
        };
        let mut parts = rest.split('/');
        let hosts = parts.next().unwrap_or_default();
        let master = parts.next().unwrap_or_default().to_owned();
        let db = match parts.next().filter(|d| !d.is_empty()) {
            Some(d) => d
                .parse::<i64>()
                .map_err(|_| format!("database {d:?} is not a number"))?,
            None => 0,
        };
        if parts.any(|p| !p.is_empty()) {
            return Err("redis+sentinel:// takes /<master-name>[/db] after the hosts".into());
        }
        if master.is_empty() {
            return Err("redis+sentinel:// names no master (…/<master-name>)".into());
        }
        let sentinels = hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| host_port(h, 26379))
            .collect::<Result<Vec<_>, _>>()?;
        if sentinels.is_empty() {
            return Err("redis+sentinel:// names no sentinel".into());
        }
        Ok(Self {
            sentinels,
            master,
            db,
            username,
            password,
            tls,
        })
    }
}

impl Target {
    /// `redis://[user:pass@]host:port[/db]` is one server;
    /// `redis+cluster://[user:pass@]host1:port1,host2:port2,…` or a comma list
    /// `redis://host1:port1,redis://host2:port2` is a cluster given by seed
    /// nodes (any reachable node is enough; the rest are discovered);
    /// `redis+sentinel://[user:pass@]h1:26379,h2:26379/<master>[/db]` a
    /// master that sentinels name. Each has a TLS form (`rediss…`).
    pub fn parse(url: &str) -> Result<Self, String> {
        let url = url.trim();
        for (scheme, tls) in [("redis+sentinel://", false), ("rediss+sentinel://", true)] {
            if let Some(rest) = url.strip_prefix(scheme) {
                return SentinelTarget::parse(rest, tls).map(Target::Sentinel);
            }
        }
        for (scheme, node_scheme) in [
            ("redis+cluster://", "redis://"),
            ("rediss+cluster://", "rediss://"),
        ] {
            let Some(rest) = url.strip_prefix(scheme) else {
                continue;
            };
            let (auth, hosts) = match rest.rsplit_once('@') {
                Some((auth, hosts)) => (format!("{auth}@"), hosts),
                None => (String::new(), rest),
            };
            let nodes: Vec<String> = hosts
                .split(',')
                .map(|h| h.trim().trim_end_matches('/'))
                .filter(|h| !h.is_empty())
                .map(|h| format!("{node_scheme}{auth}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err(format!("{scheme} names no node"));
            }
            return Ok(Target::Cluster(nodes));
        }
        if url.contains(',') {
            let nodes: Vec<String> = url
                .split(',')
                .map(|n| n.trim().to_owned())
                .filter(|n| !n.is_empty())
                .collect();
            if let Some(bad) = nodes
                .iter()
                .find(|n| !(n.starts_with("redis://") || n.starts_with("rediss://")))
            {
                return Err(format!(
                    "cluster node {:?} is not a redis:// URL",
                    redact(bad)
                ));
            }
            return Ok(Target::Cluster(nodes));
        }
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(
                "must start with redis://, rediss://, redis+cluster://, rediss+cluster:// \
                 or redis+sentinel://"
                    .into(),
            );
        }
        Ok(Target::Single(url.to_owned()))
    }

    /// Whether every connection is TLS.
    pub fn tls(&self) -> bool {
        match self {
            Target::Single(url) => url.starts_with("rediss://"),
            Target::Cluster(nodes) => nodes.iter().all(|n| n.starts_with("rediss://")),
            Target::Sentinel(s) => s.tls,
        }
    }

    /// What the logs may say about the deployment.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Single(_) => "single",
            Target::Cluster(_) => "cluster",
            Target::Sentinel(_) => "sentinel",
        }
    }
}

/// `url` with any password replaced by `***`, for logs and error messages:
/// every form of `QRLOGIN_REDIS_URL` (one URL, a comma list, the
/// `+cluster` and `+sentinel` forms) keeps its hosts and loses its secret.
pub fn redact(url: &str) -> String {
    url.split(',')
        .map(|part| {
            let (scheme, rest) = match part.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, part),
            };
            let redacted = match rest.rsplit_once('@') {
                Some((auth, hosts)) => match auth.split_once(':') {
                    Some((user, _)) => format!("{user}:***@{hosts}"),
                    None => format!("{auth}@{hosts}"),
                },
                None => rest.to_owned(),
            };
            match scheme {
                Some(s) => format!("{s}://{redacted}"),
                None => redacted,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::{Redis, TlsFiles};

    #[test]
    fn one_server_url() {
        assert_eq!(
            Target::parse("redis://:pw@10.0.0.1:6380/2"),
            Ok(Target::Single("redis://:pw@10.0.0.1:6380/2".into()))
        );
    }

    #[test]
    fn cluster_urls_name_every_seed_with_the_credentials() {
        assert_eq!(
            Target::parse("redis+cluster://u:p@a:7000,b:7001/"),
            Ok(Target::Cluster(vec![
                "redis://u:p@a:7000".into(),
                "redis://u:p@b:7001".into()
            ]))
        );
        assert_eq!(
            Target::parse("redis://a:7000, redis://b:7001"),
            Ok(Target::Cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        assert!(Target::parse("redis+cluster://").is_err());
        assert!(Target::parse("redis://a:7000,b:7001").is_err());
    }

    #[test]
    fn tls_forms_keep_tls_on_every_node() {
        assert_eq!(
            Target::parse("rediss://u:p@h:6380/1"),
            Ok(Target::Single("rediss://u:p@h:6380/1".into()))
        );
        let cluster = Target::parse("rediss+cluster://:p@a:7000,b:7001").unwrap();
        assert_eq!(
            cluster,
            Target::Cluster(vec![
                "rediss://:p@a:7000".into(),
                "rediss://:p@b:7001".into()
            ])
        );
        assert!(cluster.tls());
        assert!(!Target::parse("redis://a:1, rediss://b:2").unwrap().tls());
        // TLS files with a plaintext URL are a mistake, not a quiet downgrade.
        let tls = TlsFiles {
            ca: Some(b"x".to_vec()),
            client: None,
        };
        let err = Redis::open("redis://127.0.0.1:6379", &tls).err().unwrap();
        assert!(err.contains("not a TLS"), "{err}");
        assert!(Redis::open("rediss://127.0.0.1:6380", &TlsFiles::default()).is_ok());
    }

    #[test]
    fn sentinel_urls_name_the_sentinels_the_master_and_the_data_nodes_credentials() {
        let Ok(Target::Sentinel(s)) =
            Target::parse("redis+sentinel://app:p%40ss@h1:26379,[::1]:26380,h3/mymaster/2")
        else {
            panic!("a sentinel URL")
        };
        assert_eq!(
            s.sentinels,
            vec![
                ("h1".to_owned(), 26379),
                ("::1".to_owned(), 26380),
                ("h3".to_owned(), 26379)
            ]
        );
        assert_eq!((s.master.as_str(), s.db), ("mymaster", 2));
        assert_eq!(s.username.as_deref(), Some("app"));
        assert_eq!(s.password.as_deref(), Some("p@ss"));
        assert!(!s.tls);
        assert!(!format!("{s:?}").contains("p@ss"));
        let Ok(Target::Sentinel(s)) = Target::parse("rediss+sentinel://:pw@h1/m") else {
            panic!("a TLS sentinel URL")
        };
        assert_eq!(
            (s.username, s.password.as_deref(), s.tls),
            (None, Some("pw"), true)
        );
        for bad in [
            "redis+sentinel://h1:26379",
            "redis+sentinel://h1:26379/",
            "redis+sentinel:///m",
            "redis+sentinel://h1:x/m",
            "redis+sentinel://h1/m/zero",
            "redis+sentinel://h1/m/0/more",
            "http://h1",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
        assert!(Redis::open("redis+sentinel://127.0.0.1:1/m", &TlsFiles::default()).is_ok());
    }

    #[test]
    fn redaction_hides_the_password_in_every_url_form() {
        for (url, shown) in [
            ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
            ("rediss://app:s3cret@h:6380", "rediss://app:***@h:6380"),
            (
                "redis+cluster://app:s3cret@a:7000,b:7001",
                "redis+cluster://app:***@a:7000,b:7001",
            ),
            (
                "rediss+cluster://:s3cret@a:7000",
                "rediss+cluster://:***@a:7000",
            ),
            (
                "redis://:s3cret@a:7000,redis://:s3cret@b:7001",
                "redis://:***@a:7000,redis://:***@b:7001",
            ),
            (
                "redis+sentinel://app:s3cret@h1:26379,h2:26379/m/1",
                "redis+sentinel://app:***@h1:26379,h2:26379/m/1",
            ),
            ("redis://user-only@h:6379", "redis://user-only@h:6379"),
            ("redis://h:6379", "redis://h:6379"),
        ] {
            assert_eq!(redact(url), shown);
            assert!(!redact(url).contains("s3cret"));
        }
        // A malformed URL's error does not echo the password either.
        let err = Target::parse("redis://:s3cret@a:1,b:2").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
