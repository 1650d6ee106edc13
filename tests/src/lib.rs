//! Test harness: throwaway PostgreSQL clusters started from the installed binaries, one per test binary, a database
//! per test. No mock of Postgres anywhere.
//!
//! - The binaries: `$PGSHIFT_PG_BIN`, else `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`.
//! - `initdb` runs once per machine and PostgreSQL version into a cached template; each cluster is a copy of it.
//! - The server listens on a random free loopback port; the harness checks that the server it reaches is the one it
//!   started (its `data_directory`).
//! - As root, the server runs as the `postgres` user (initdb refuses root). It gets a parent-death signal, so it
//!   never outlives the test process.

use std::net::TcpListener;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio_postgres::NoTls;

pub mod data_api;
pub mod fingerprint;
pub mod hooked;
pub mod lambda_api;
pub mod parquet_text;
pub mod sfn;

/// A running throwaway cluster.
#[derive(Debug)]
pub struct Cluster {
    pub port: u16,
    pub data_dir: PathBuf,
    pub bin: PathBuf,
}

static CLUSTER: OnceLock<Cluster> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// The cluster in `cell`, started on first use (`what` names it in a failure).
fn started(cell: &'static OnceLock<Cluster>, what: &str) -> &'static Cluster {
    cell.get_or_init(|| {
        // Started on a plain thread: the caller may be inside an async runtime.
        std::thread::spawn(Cluster::start)
            .join()
            .expect("cluster start thread")
            .unwrap_or_else(|e| panic!("starting a throwaway PostgreSQL cluster {what}: {e:#}"))
    })
}

/// The cluster of this test binary, started on first use.
pub fn cluster() -> &'static Cluster {
    started(&CLUSTER, "for the tests")
}

static SNAPSHOT_CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A second cluster, for the sources of snapshot tests: a local snapshot is a base backup of a whole cluster, so
/// theirs holds only their own databases (tens of MB), not every other test's (1.7 GB a backup in the shared one).
pub fn snapshot_cluster() -> &'static Cluster {
    started(&SNAPSHOT_CLUSTER, "for snapshots")
}

static QUIET_CLUSTER: OnceLock<Cluster> = OnceLock::new();

/// A third cluster, for a test that needs a server no other test writes to while it runs (nothing commits between
/// a run's planner and its extractors unless the test does).
pub fn quiet_cluster() -> &'static Cluster {
    started(&QUIET_CLUSTER, "for a quiet source")
}

/// The uid/gid to run the server as: `postgres` when we are root, ourselves otherwise.
fn server_user() -> Option<(u32, u32)> {
    if !is_root() {
        return None;
    }
    let out = Command::new("id").args(["-u", "postgres"]).output().ok()?;
    let uid = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
    let out = Command::new("id").args(["-g", "postgres"]).output().ok()?;
    let gid = String::from_utf8(out.stdout).ok()?.trim().parse().ok()?;
    Some((uid, gid))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

pub fn pg_bin() -> Result<PathBuf> {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if std::env::var_os("PGSHIFT_PG_BIN").is_none() && p.join("initdb").exists() {
            return Ok(p);
        }
    }
    // The same lookup as the RDS stand-in's: PGSHIFT_PG_BIN, else the newest under /usr/lib/postgresql.
    pgshift::rds::local::pg_bin(None).map_err(|e| anyhow::anyhow!("{e}"))
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

/// A directory the server user can own and traverse.
fn server_dir(path: &Path, user: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir_all(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    if let Some((uid, gid)) = user {
        chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

fn template(bin: &Path, user: Option<(u32, u32)>) -> Result<PathBuf> {
    let version = Command::new(bin.join("postgres")).arg("--version").output()?;
    let version = String::from_utf8_lossy(&version.stdout);
    let tag: String = version.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    let root = std::env::temp_dir().join("pgshift-test");
    std::fs::create_dir_all(&root)?;
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))?;
    let tpl = root.join(format!("template-{tag}"));
    if tpl.join("PG_VERSION").exists() {
        return Ok(tpl);
    }
    let tmp = root.join(format!("template-{tag}.{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    server_dir(&tmp, user)?;
    let mut cmd = Command::new(bin.join("initdb"));
    cmd.args(["-D"])
        .arg(&tmp)
        .args([
            "-U",
            "postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ])
        .stdout(Stdio::null());
    as_server_user(&mut cmd, user);
    let out = cmd.output().context("running initdb")?;
    if !out.status.success() {
        bail!("initdb failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Another test process may have won the race; either template is good.
    if std::fs::rename(&tmp, &tpl).is_err() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(tpl)
}

/// Writes a test CA (`<name>-ca.crt`) and a certificate it signed for localhost and 127.0.0.1 (`<name>.crt`,
/// `<name>.key`) into `dir`; returns the CA's path. P-256 keys, so it takes milliseconds.
pub fn test_certificates(dir: &Path, name: &str) -> Result<PathBuf> {
    let file = |suffix: &str| dir.join(format!("{name}{suffix}"));
    let openssl = |args: &[&str], files: &[(&str, &str)]| -> Result<()> {
        let mut cmd = Command::new("openssl");
        cmd.args(args);
        for (flag, suffix) in files {
            cmd.arg(flag).arg(file(suffix));
        }
        let out = cmd.output().context("running openssl (scripts/setup.sh installs it)")?;
        if !out.status.success() {
            bail!("openssl {}: {}", args[0], String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    };
    std::fs::write(
        file(".ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )?;
    let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    let ca = format!("req -x509 -days 3650 -subj /CN=pgshift-test-CA {ec_key}");
    openssl(
        &ca.split(' ').collect::<Vec<_>>(),
        &[("-keyout", "-ca.key"), ("-out", "-ca.crt")],
    )?;
    let csr = format!("req -subj /CN=localhost {ec_key}");
    openssl(
        &csr.split(' ').collect::<Vec<_>>(),
        &[("-keyout", ".key"), ("-out", ".csr")],
    )?;
    openssl(
        &["x509", "-req", "-days", "3650", "-set_serial", "1"],
        &[
            ("-in", ".csr"),
            ("-CA", "-ca.crt"),
            ("-CAkey", "-ca.key"),
            ("-extfile", ".ext"),
            ("-out", ".crt"),
        ],
    )?;
    Ok(file("-ca.crt"))
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let bin = pg_bin()?;
        let user = server_user();
        let tpl = template(&bin, user)?;
        let root = std::env::temp_dir().join("pgshift-test");
        remove_stale(&root);
        let data_dir = root.join(format!(
            "cluster-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let status = Command::new("cp").arg("-a").arg(&tpl).arg(&data_dir).status()?;
        if !status.success() {
            bail!("copying the cluster template failed");
        }
        // TLS on (plain connections stay allowed): a certificate for localhost and 127.0.0.1 from a test CA.
        test_certificates(&data_dir, "server")?;
        // Every file in the data directory the server's user can read: a base backup copies them all.
        for f in [
            "server.crt",
            "server.key",
            "server-ca.crt",
            "server-ca.key",
            "server.csr",
            "server.ext",
        ] {
            if let (Some((uid, gid)), true) = (user, data_dir.join(f).exists()) {
                chown(data_dir.join(f), Some(uid), Some(gid))?;
            }
        }
        std::fs::set_permissions(data_dir.join("server.key"), std::fs::Permissions::from_mode(0o600))?;
        for attempt in 0..5 {
            let port = free_port()?;
            let (tx, rx) = std::sync::mpsc::channel();
            let (b, d) = (bin.clone(), data_dir.clone());
            // The server's parent-death signal fires when the spawning *thread* exits: spawn from a thread that
            // lives as long as the process.
            std::thread::spawn(move || {
                let child = spawn_server(&b, &d, port, user);
                let ok = child.is_ok();
                let _ = tx.send(child.map(|_| ()));
                if ok {
                    loop {
                        std::thread::park();
                    }
                }
            });
            rx.recv()??;
            match wait_ready(port, &data_dir) {
                Ok(()) => return Ok(Cluster { port, data_dir, bin }),
                Err(e) if attempt < 4 => {
                    eprintln!("cluster on port {port} did not come up ({e}); retrying")
                }
                Err(e) => return Err(e),
            }
        }
        unreachable!()
    }

    /// The root the server's certificate chains to.
    pub fn certificate_authority(&self) -> PathBuf {
        self.data_dir.join("server-ca.crt")
    }

    /// A connection string for `db` as the superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A role that must give its password over TCP (scram-sha-256), on a cluster whose other roles are trusted: a
    /// rule for it alone at the top of pg_hba.conf, the configuration reloaded. Idempotent.
    pub async fn password_role(&self, role: &str, password: &str) -> Result<()> {
        let hba = self.data_dir.join("pg_hba.conf");
        let text = std::fs::read_to_string(&hba)?;
        let rule = format!("host all {role} 127.0.0.1/32 scram-sha-256\n");
        if !text.contains(&rule) {
            std::fs::write(&hba, format!("{rule}{text}"))?;
        }
        let c = connect(&self.url("postgres")).await?;
        let exists = c
            .query_opt("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", &[&role])
            .await?
            .is_some();
        if !exists {
            c.batch_execute(&format!(
                "SET password_encryption = 'scram-sha-256'; CREATE ROLE \"{role}\" LOGIN SUPERUSER PASSWORD '{password}'"
            ))
            .await?;
        }
        c.query_one("SELECT pg_catalog.pg_reload_conf()", &[]).await?;
        // The reload is asynchronous: wait until the rule is in force (the role without its password refused).
        let bare = format!("postgres://{role}@127.0.0.1:{}/postgres", self.port);
        for _ in 0..100 {
            if tokio_postgres::connect(&bare, NoTls).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// A fresh database for one test; returns its connection string.
    pub async fn create_db(&self, prefix: &str) -> Result<String> {
        let name = format!("{prefix}_{}", NEXT_DB.fetch_add(1, Ordering::Relaxed));
        let admin = connect(&self.url("postgres")).await?;
        admin.batch_execute(&format!("CREATE DATABASE \"{name}\"")).await?;
        Ok(self.url(&name))
    }
}

/// Removes what earlier test processes left: clusters and stages of processes that are gone.
fn remove_stale(root: &Path) {
    for e in std::fs::read_dir(root).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("cluster-") else {
            continue;
        };
        let pid = rest.split(['-', '.']).next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let p = e.path();
            let _ = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
        }
    }
}

fn spawn_server(bin: &Path, data_dir: &Path, port: u16, user: Option<(u32, u32)>) -> Result<std::process::Child> {
    let log = std::fs::File::create(data_dir.with_extension("log"))?;
    if let Some((uid, gid)) = user {
        chown(data_dir.with_extension("log"), Some(uid), Some(gid))?;
    }
    let mut cmd = Command::new(bin.join("postgres"));
    cmd.arg("-D").arg(data_dir).args(["-p", &port.to_string()]);
    for setting in [
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "full_page_writes=off",
        "synchronous_commit=off",
        "max_connections=200",
        "shared_buffers=256MB",
        "max_wal_size=4GB",
        // Replication on: the snapshot tests take base backups of this cluster (`pgshift snapshot create`).
        "wal_level=replica",
        "max_wal_senders=8",
        "wal_keep_size=1GB",
        "lc_messages=C",
        "ssl=on",
    ] {
        cmd.args(["-c", setting]);
    }
    cmd.arg("-c")
        .arg(format!("unix_socket_directories={}", data_dir.display()));
    cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
    as_server_user(&mut cmd, user);
    #[allow(unsafe_code)]
    // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal before exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd.spawn()?)
}

fn wait_ready(port: u16, data_dir: &Path) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    rt.block_on(async {
        loop {
            match connect(&url).await {
                Ok(c) => {
                    let dir: String = c.query_one("SHOW data_directory", &[]).await?.get(0);
                    if Path::new(&dir) != data_dir {
                        bail!("port {port} is served by another server ({dir})");
                    }
                    return Ok(());
                }
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => bail!("server did not accept connections: {e}"),
            }
        }
    })
}

/// Connects and drives the connection in the background.
pub async fn connect(url: &str) -> Result<tokio_postgres::Client> {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// Staging tables (`…__pgshift_…`) the database at `url` holds: what every test of a failure checks is zero.
pub async fn staging_tables(url: &str) -> Result<i64> {
    let c = connect(url).await?;
    let row = c
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_\\_pgshift\\_%'",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// A fresh empty directory for a test's stage.
pub fn stage_dir(name: &str) -> PathBuf {
    fresh_dir(name)
}

/// A fresh empty directory for a test (its stage, its HOME, its files): unique per call, never what an earlier run
/// left, since process ids repeat from one CI container to the next and `/tmp` may outlive them. It sits below this
/// process's cluster directory, so the next test binary removes it once this process is gone.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir()
        .join("pgshift-test")
        .join(format!("cluster-{}-stages", std::process::id()))
        .join(format!("{name}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("creating a test directory");
    dir
}

/// Every file below `dir`, relative, sorted.
pub fn list_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// Credentials the test S3 server accepts (requests are signed and checked: SigV4 for real).
pub const S3_ACCESS_KEY: &str = "pgshift-test-access";
pub const S3_SECRET_KEY: &str = "pgshift-test-secret";

/// A real S3-compatible HTTP server on loopback: `s3s` over `s3s-fs`, served by hyper on its own thread and runtime
/// (it outlives every test's runtime). Buckets are directories under `root`.
#[derive(Debug)]
pub struct S3Server {
    pub endpoint: String,
    pub root: PathBuf,
}

static S3: OnceLock<S3Server> = OnceLock::new();

/// The S3 server of this test binary, started on first use.
pub fn s3_server() -> &'static S3Server {
    S3.get_or_init(|| S3Server::start().expect("starting the test S3 server"))
}

impl S3Server {
    /// A server of its own, for a test that checks what the whole server holds (multipart uploads in progress live
    /// at the root, shared by every bucket, so a shared server would show other tests' uploads).
    pub fn start() -> Result<S3Server> {
        static SERVERS: AtomicU32 = AtomicU32::new(0);
        let root = std::env::temp_dir().join("pgshift-test").join(format!(
            "cluster-{}-s3-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&root)?;
        let (tx, rx) = std::sync::mpsc::channel::<Result<u16>>();
        let fs_root = root.clone();
        std::thread::spawn(move || {
            let serve = || -> Result<()> {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let fs = s3s_fs::FileSystem::new(&fs_root).map_err(|e| anyhow::anyhow!("s3s-fs: {e:?}"))?;
                    let mut builder = s3s::service::S3ServiceBuilder::new(fs);
                    builder.set_auth(s3s::auth::SimpleAuth::from_single(S3_ACCESS_KEY, S3_SECRET_KEY));
                    let service = builder.build();
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let _ = tx.send(Ok(listener.local_addr()?.port()));
                    let http = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    loop {
                        let Ok((socket, _)) = listener.accept().await else {
                            continue;
                        };
                        let conn = http.serve_connection(hyper_util::rt::TokioIo::new(socket), service.clone());
                        let conn = conn.into_owned();
                        tokio::spawn(async move {
                            let _ = conn.await;
                        });
                    }
                })
            };
            if let Err(e) = serve() {
                let _ = tx.send(Err(e));
            }
        });
        let port = rx.recv()??;
        Ok(S3Server {
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
        })
    }

    /// An SDK client for this server, with the given secret (a wrong one makes every request fail its signature).
    pub fn client_with_secret(&self, secret: &str) -> aws_sdk_s3::Client {
        let creds = aws_sdk_s3::config::Credentials::new(S3_ACCESS_KEY, secret, None, None, "pgshift-tests");
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn client(&self) -> aws_sdk_s3::Client {
        self.client_with_secret(S3_SECRET_KEY)
    }

    /// A fresh bucket (a directory of the server's root).
    pub fn bucket(&self, prefix: &str) -> String {
        let name = format!("{prefix}-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        std::fs::create_dir_all(self.root.join(&name)).expect("creating a bucket directory");
        name
    }

    /// Multipart uploads the server still holds (started and neither completed nor aborted).
    pub fn uploads_in_progress(&self) -> Vec<String> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    /// No test names its directory by the process id alone: ids repeat from one CI container to the next, and a
    /// directory an earlier run left (its stage, its runs) once failed a run id as "exists on the stage already".
    #[test]
    fn no_test_directory_is_named_by_the_process_id_alone() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut dirs = vec![root.join("tests/tests")];
        for e in std::fs::read_dir(root.join("crates")).into_iter().flatten().flatten() {
            dirs.push(e.path().join("tests"));
        }
        let mut found = Vec::new();
        for dir in dirs {
            for f in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let text = std::fs::read_to_string(f.path()).unwrap_or_default();
                for (i, line) in text.lines().enumerate() {
                    if line.contains("temp_dir()") && line.contains("process::id()") {
                        found.push(format!("{}:{}", f.path().display(), i + 1));
                    }
                }
            }
        }
        assert!(found.is_empty(), "use pgshift_tests::fresh_dir instead: {found:?}");
        assert_ne!(super::fresh_dir("a"), super::fresh_dir("a"));
    }
}
