//! The stand-in's servers: the installed PostgreSQL binaries, the user a server runs as, a free port, and stopping
//! a restored server.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::io;
use crate::rds::{RdsError, INVALID_PARAMETER};

/// The installed PostgreSQL server binaries, for a data directory's major version when given, else the newest
/// (`PGSHIFT_PG_BIN` overrides). The test harness finds its binaries with this too.
pub fn pg_bin(major: Option<&str>) -> Result<PathBuf, RdsError> {
    if let Some(p) = std::env::var_os("PGSHIFT_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new("/usr/lib/postgresql");
    if let Some(m) = major {
        let bin = root.join(m).join("bin");
        if bin.join("pg_ctl").exists() {
            return Ok(bin);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("pg_ctl").exists().then_some((v, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p).ok_or_else(|| {
        io(
            "finding the PostgreSQL binaries",
            "none under /usr/lib/postgresql: run scripts/setup.sh or set PGSHIFT_PG_BIN",
        )
    })
}

/// The user a server runs as: `postgres` when this process is root (the server refuses root), else this user.
pub(super) fn server_user() -> Option<(u32, u32)> {
    let id = |args: &[&str]| -> Option<u32> {
        let o = Command::new("id").args(args).output().ok()?;
        String::from_utf8_lossy(&o.stdout).trim().parse().ok()
    };
    if id(&["-u"]) != Some(0) {
        return None;
    }
    Some((id(&["-u", "postgres"])?, id(&["-g", "postgres"])?))
}

pub(super) fn run(cmd: &mut Command, what: &str) -> Result<(), RdsError> {
    let out = cmd.stdin(Stdio::null()).output().map_err(|e| io(what, e))?;
    if out.status.success() {
        return Ok(());
    }
    Err(io(what, String::from_utf8_lossy(&out.stderr).trim()))
}

/// A server with user tablespaces is refused before anything is copied, naming each: their files live outside the
/// data directory, and a plain base backup writes them back to their own paths on this machine (where the source
/// server may keep them), which the stand-in's snapshots and restored servers cannot share. When the catalog cannot
/// be read here, `pg_basebackup` reports why.
pub(super) fn refuse_tablespaces(source_url: &str) -> Result<(), RdsError> {
    let bin = pg_bin(None)?;
    let query = "SELECT spcname OPERATOR(pg_catalog.||) ' (' OPERATOR(pg_catalog.||) \
                 pg_catalog.pg_tablespace_location(oid) OPERATOR(pg_catalog.||) ')' FROM pg_catalog.pg_tablespace \
                 WHERE spcname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_default', 'pg_global']::pg_catalog.name[]) \
                 ORDER BY 1";
    let out = Command::new(bin.join("psql"))
        .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d"])
        .arg(source_url)
        .args(["-c", query])
        .stdin(Stdio::null())
        .output();
    let Some(out) = out.ok().filter(|o| o.status.success()) else {
        return Ok(());
    };
    let found: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    Err(RdsError::new(
        INVALID_PARAMETER,
        format!(
            "the --source server has user tablespaces, which the local stand-in cannot snapshot: {}; move what they \
             hold to pg_default (ALTER TABLE … SET TABLESPACE pg_default) and drop them, or snapshot a server \
             without them",
            crate::contract::code::first_few(&found, ", ")
        ),
    ))
}

pub(super) fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) -> &mut Command {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
    cmd
}

pub(super) fn free_port() -> Result<u16, RdsError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| io("finding a free port", e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| io("finding a free port", e))
}

pub(super) fn pid_alive(pid: u64) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Stops a restored server at once (its data is about to be removed).
pub(super) fn stop(dir: &Path) {
    let data = dir.join("data");
    if !data.join("postmaster.pid").exists() {
        return;
    }
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    if let Ok(bin) = pg_bin(Some(version.trim())) {
        let mut cmd = Command::new(bin.join("pg_ctl"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null());
        let _ = run(as_user(&mut cmd, server_user()), "stopping the restored server");
    }
}
