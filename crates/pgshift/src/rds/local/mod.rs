//! The local RDS stand-in: snapshots are physical base backups (`pg_basebackup` with its WAL) in a directory, and a
//! restore starts a throwaway PostgreSQL server from a copy of one, on a free loopback port, from the installed
//! binaries. It answers the actions the definition makes in the shapes RDS answers them (`creating` → `available`,
//! `Endpoint`, `TagList`, the `Rds.*Exception` names), so the definition runs here with no local special case.
//!
//! ```text
//! <dir>/snapshots/<id>/snapshot.json, data/      a snapshot (its status `creating` until the backup completes)
//! <dir>/instances/<id>/instance.json, data/, server.log
//! <dir>/clusters/<id>/cluster.json               an Aurora cluster: a record; its instance holds the server
//! ```
//! Servers are started with `pg_ctl` and outlive the process that restored them, as an RDS instance outlives a dead
//! execution: `pgshift gc` (the sweep) finds and removes them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

mod server;

pub use server::pg_bin;
use server::{as_user, free_port, pid_alive, refuse_tablespaces, run, server_user, stop};

use super::{field, Rds, RdsError};
use crate::rds::{
    CLUSTER_EXISTS, CLUSTER_NOT_FOUND, CLUSTER_SNAPSHOT_NOT_FOUND, INSTANCE_EXISTS, INSTANCE_NOT_FOUND,
    INVALID_PARAMETER, INVALID_SNAPSHOT_STATE, SNAPSHOT_NOT_FOUND,
};

/// The stand-in, over one directory.
#[derive(Debug, Clone)]
pub struct LocalRds {
    dir: PathBuf,
    /// A test hook: restores stay `creating` and never start a server (a restore that never becomes available).
    pub hold_creating: bool,
}

/// The default snapshot directory: `$PGSHIFT_SNAPSHOT_DIR`, else `~/.pgshift/snapshots`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGSHIFT_SNAPSHOT_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".pgshift").join("snapshots")
}

pub(super) fn io(what: &str, e: impl std::fmt::Display) -> RdsError {
    RdsError::new("Rds.InternalFailureException", format!("{what}: {e}"))
}

/// A directory name for an identifier (`rds:orders-2026-11-24` → `rds_orders-2026-11-24`).
fn slot(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn read_json(path: &Path) -> Option<Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes whole or not at all (a reader never sees half a record).
fn write_json(path: &Path, v: &Value) -> Result<(), RdsError> {
    let tmp = path.with_extension(format!("tmp.{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(v).unwrap_or_default()).map_err(|e| io("writing a record", e))?;
    std::fs::rename(&tmp, path).map_err(|e| io("writing a record", e))
}

/// The tags of a request (`Tags`) as RDS lists them (`TagList`).
fn tags_of(request: &Value) -> Value {
    request.get("Tags").cloned().unwrap_or_else(|| json!([]))
}

impl LocalRds {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            hold_creating: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn snapshot_dir(&self, id: &str) -> PathBuf {
        self.dir.join("snapshots").join(slot(id))
    }

    fn instance_dir(&self, id: &str) -> PathBuf {
        self.dir.join("instances").join(slot(id))
    }

    fn cluster_file(&self, id: &str) -> PathBuf {
        self.dir.join("clusters").join(format!("{}.json", slot(id)))
    }

    /// `CreateDBSnapshot`'s counterpart: a base backup of the server at `source_url` (a user with the REPLICATION
    /// privilege, a `pg_hba.conf` that allows its replication connection), with the WAL to make it consistent. A
    /// `cluster` snapshot stands for an Aurora cluster snapshot. Its status is `creating` until the backup is
    /// complete.
    pub fn create_snapshot(&self, source_url: &str, id: &str, cluster: bool) -> Result<Value, RdsError> {
        if id.trim().is_empty() || id.len() > 255 {
            return Err(RdsError::new(
                INVALID_PARAMETER,
                format!("snapshot id {id:?}: 1 to 255 characters"),
            ));
        }
        let dir = self.snapshot_dir(id);
        if dir.join("snapshot.json").exists() {
            return Err(RdsError::new(
                "Rds.DbSnapshotAlreadyExistsException",
                format!(
                    "snapshot {id} already exists in {}: choose another --id",
                    self.dir.display()
                ),
            ));
        }
        refuse_tablespaces(source_url)?;
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the snapshot directory", e))?;
        let mut record = json!({
            "DbSnapshotIdentifier": id,
            "Engine": if cluster { "aurora-postgresql" } else { "postgres" },
            "Status": "creating",
            // RDS names its automated snapshots `rds:…`.
            "SnapshotType": if id.starts_with("rds:") { "automated" } else { "manual" },
            "SnapshotCreateTime": now(),
            // The database the snapshot is of, as RDS names it: the stand-in's is the source's database name.
            "DbInstanceIdentifier": source_name(source_url),
            "Source": redacted(source_url),
        });
        if cluster {
            record["DbClusterSnapshotIdentifier"] = json!(id);
            record["DbClusterIdentifier"] = record["DbInstanceIdentifier"].clone();
        }
        write_json(&dir.join("snapshot.json"), &record)?;
        let data = dir.join("data");
        let backup = pg_bin(None).and_then(|bin| {
            run(
                Command::new(bin.join("pg_basebackup"))
                    .arg("-d")
                    .arg(source_url)
                    .arg("-D")
                    .arg(&data)
                    .args(["-X", "stream", "-c", "fast", "--no-sync"]),
                "pg_basebackup of --source (it needs a user with the REPLICATION privilege, wal_level = replica, \
                 max_wal_senders > 0, a pg_hba.conf line for the replication connection, and read access to every \
                 file of the data directory)",
            )
        });
        if let Err(e) = backup {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
        let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
        record["EngineVersion"] = json!(version.trim());
        record["Status"] = json!("available");
        write_json(&dir.join("snapshot.json"), &record)?;
        Ok(record)
    }

    fn snapshot(&self, id: &str, not_found: &str) -> Result<Value, RdsError> {
        read_json(&self.snapshot_dir(id).join("snapshot.json"))
            .ok_or_else(|| RdsError::new(not_found, format!("snapshot {id} not found in {}", self.dir.display())))
    }

    fn describe_snapshots(&self, request: &Value, cluster: bool) -> Result<Value, RdsError> {
        let (key, list, missing) = if cluster {
            (
                "DbClusterSnapshotIdentifier",
                "DbClusterSnapshots",
                CLUSTER_SNAPSHOT_NOT_FOUND,
            )
        } else {
            ("DbSnapshotIdentifier", "DbSnapshots", SNAPSHOT_NOT_FOUND)
        };
        let id = field(request, key, "describeDBSnapshots")?;
        let s = self.snapshot(id, missing)?;
        let is_cluster = s.get("DbClusterSnapshotIdentifier").is_some();
        if is_cluster != cluster {
            // RDS keeps the two kinds apart: an instance snapshot is not found as a cluster snapshot.
            return Err(RdsError::new(
                missing,
                format!("{id} is not a DB {}snapshot", if cluster { "cluster " } else { "" }),
            ));
        }
        // As RDS: an automated snapshot's identifier is described only with `SnapshotType: automated`.
        let automated = s.get("SnapshotType").and_then(Value::as_str) == Some("automated");
        if automated && request.get("SnapshotType").and_then(Value::as_str) != Some("automated") {
            return Err(RdsError::new(
                missing,
                format!("{id} is an automated snapshot: describe it with SnapshotType automated"),
            ));
        }
        Ok(json!({ list: [s] }))
    }

    fn instance(&self, id: &str) -> Result<Value, RdsError> {
        read_json(&self.instance_dir(id).join("instance.json"))
            .ok_or_else(|| RdsError::new(INSTANCE_NOT_FOUND, format!("DB instance {id} not found")))
    }

    /// Starts a restore of `snapshot` into instance `id` (in a thread: the caller sees `creating` meanwhile).
    fn start_restore(&self, id: &str, snapshot: &Value, mut record: Value) -> Result<Value, RdsError> {
        let dir = self.instance_dir(id);
        if dir.join("instance.json").exists() {
            return Err(RdsError::new(
                INSTANCE_EXISTS,
                format!("DB instance {id} already exists"),
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| io("creating the instance directory", e))?;
        record["DbInstanceStatus"] = json!("creating");
        record["InstanceCreateTime"] = json!(now());
        record["Engine"] = snapshot.get("Engine").cloned().unwrap_or(json!("postgres"));
        record["EngineVersion"] = snapshot.get("EngineVersion").cloned().unwrap_or(Value::Null);
        record["OwnerPid"] = json!(std::process::id());
        // What RDS provisions for a restore: the snapshot's allocated storage (20 GiB at least, as gp3 takes), gp3.
        record["AllocatedStorage"] = snapshot.get("AllocatedStorage").cloned().unwrap_or(json!(20));
        record["StorageType"] = snapshot.get("StorageType").cloned().unwrap_or(json!("gp3"));
        write_json(&dir.join("instance.json"), &record)?;
        if !self.hold_creating {
            let source = self.snapshot_dir(snapshot["DbSnapshotIdentifier"].as_str().unwrap_or_default());
            let (id, me) = (id.to_string(), self.clone());
            std::thread::spawn(move || {
                if let Err(e) = me.restore(&id, &source.join("data")) {
                    tracing::warn!(instance = %id, error = %e, "local restore failed");
                    me.update(&id, |r| {
                        r["DbInstanceStatus"] = json!("failed");
                        r["StatusInfos"] = json!([{"Status": "failed", "Message": e.to_string()}]);
                    });
                }
            });
        }
        Ok(public(record))
    }

    fn update(&self, id: &str, f: impl FnOnce(&mut Value)) {
        let path = self.instance_dir(id).join("instance.json");
        if let Some(mut r) = read_json(&path) {
            f(&mut r);
            let _ = write_json(&path, &r);
        }
    }

    /// Copies the base backup and starts a server on it; the instance is `available` once it accepts connections.
    fn restore(&self, id: &str, backup: &Path) -> Result<(), RdsError> {
        let dir = self.instance_dir(id);
        let data = dir.join("data");
        run(
            Command::new("cp").arg("-a").arg(backup).arg(&data),
            "copying the snapshot",
        )?;
        let user = server_user();
        if let Some((uid, gid)) = user {
            run(
                Command::new("chown").arg("-R").arg(format!("{uid}:{gid}")).arg(&dir),
                "chown",
            )?;
        }
        run(Command::new("chmod").arg("700").arg(&data), "chmod")?;
        let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
        let bin = pg_bin(Some(version.trim()))?;
        let port = free_port()?;
        // TCP on loopback only: no Unix socket (its path would be too long under a deep directory).
        let options = format!("-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories= -c fsync=off");
        run(
            as_user(
                Command::new(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .arg("-l")
                    .arg(dir.join("server.log"))
                    .args(["-w", "-t", "120", "-o", &options, "start"])
                    .stdout(Stdio::null()),
                user,
            ),
            "starting the restored server",
        )?;
        if !dir.join("instance.json").exists() {
            // Deleted while it was being restored.
            stop(&dir);
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(());
        }
        self.update(id, |r| {
            r["DbInstanceStatus"] = json!("available");
            r["Endpoint"] = json!({"Address": "127.0.0.1", "Port": port});
        });
        Ok(())
    }

    fn restore_instance(&self, request: &Value) -> Result<Value, RdsError> {
        let action = "restoreDBInstanceFromDBSnapshot";
        let id = field(request, "DbInstanceIdentifier", action)?;
        let snap_id = field(request, "DbSnapshotIdentifier", action)?;
        let snapshot = self.snapshot(snap_id, SNAPSHOT_NOT_FOUND)?;
        if snapshot.get("Status").and_then(Value::as_str) != Some("available") {
            return Err(RdsError::new(
                INVALID_SNAPSHOT_STATE,
                format!("snapshot {snap_id} is not available (it is {})", snapshot["Status"]),
            ));
        }
        let record = json!({
            "DbInstanceIdentifier": id,
            "DbInstanceClass": request.get("DbInstanceClass").cloned().unwrap_or(json!("db.local")),
            "TagList": tags_of(request),
            "PubliclyAccessible": request.get("PubliclyAccessible").cloned().unwrap_or(json!(false)),
            "DbSnapshotIdentifier": snap_id,
        });
        let out = self.start_restore(id, &snapshot, record)?;
        Ok(json!({ "DbInstance": out }))
    }

    fn restore_cluster(&self, request: &Value) -> Result<Value, RdsError> {
        let action = "restoreDBClusterFromSnapshot";
        let id = field(request, "DbClusterIdentifier", action)?;
        let snap_id = field(request, "SnapshotIdentifier", action)?;
        let snapshot = self.snapshot(snap_id, CLUSTER_SNAPSHOT_NOT_FOUND)?;
        let path = self.cluster_file(id);
        if path.exists() {
            return Err(RdsError::new(CLUSTER_EXISTS, format!("DB cluster {id} already exists")));
        }
        std::fs::create_dir_all(self.dir.join("clusters")).map_err(|e| io("creating the cluster directory", e))?;
        let record = json!({
            "DbClusterIdentifier": id,
            "Status": "available",
            "Engine": snapshot.get("Engine").cloned().unwrap_or(json!("aurora-postgresql")),
            "ClusterCreateTime": now(),
            "TagList": tags_of(request),
            "SnapshotIdentifier": snap_id,
            "DbClusterMembers": [],
            "OwnerPid": std::process::id(),
        });
        write_json(&path, &record)?;
        Ok(json!({ "DbCluster": public(record) }))
    }

    fn create_instance(&self, request: &Value) -> Result<Value, RdsError> {
        let action = "createDBInstance";
        let id = field(request, "DbInstanceIdentifier", action)?;
        let cluster_id = field(request, "DbClusterIdentifier", action)?;
        let mut cluster = read_json(&self.cluster_file(cluster_id))
            .ok_or_else(|| RdsError::new(CLUSTER_NOT_FOUND, format!("DB cluster {cluster_id} not found")))?;
        let snap_id = cluster["SnapshotIdentifier"].as_str().unwrap_or_default().to_string();
        let snapshot = self.snapshot(&snap_id, CLUSTER_SNAPSHOT_NOT_FOUND)?;
        let record = json!({
            "DbInstanceIdentifier": id,
            "DbInstanceClass": request.get("DbInstanceClass").cloned().unwrap_or(json!("db.local")),
            "DbClusterIdentifier": cluster_id,
            "TagList": tags_of(request),
            "DbSnapshotIdentifier": snap_id,
        });
        let out = self.start_restore(id, &snapshot, record)?;
        cluster["DbClusterMembers"] = json!([{"DbInstanceIdentifier": id, "IsClusterWriter": true}]);
        write_json(&self.cluster_file(cluster_id), &cluster)?;
        Ok(json!({ "DbInstance": out }))
    }

    fn all(&self, kind: &str, file: &str) -> Vec<Value> {
        let mut out: Vec<Value> = std::fs::read_dir(self.dir.join(kind))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let p = e.path();
                if file.is_empty() {
                    (p.extension().is_some_and(|x| x == "json"))
                        .then(|| read_json(&p))
                        .flatten()
                } else {
                    read_json(&p.join(file))
                }
            })
            .map(public)
            .collect();
        out.sort_by_key(|v| v.to_string());
        out
    }

    fn describe_instances(&self, request: &Value) -> Result<Value, RdsError> {
        match request.get("DbInstanceIdentifier").and_then(Value::as_str) {
            Some(id) => Ok(json!({"DbInstances": [public(self.instance(id)?)]})),
            None => Ok(json!({"DbInstances": self.all("instances", "instance.json")})),
        }
    }

    fn describe_clusters(&self, request: &Value) -> Result<Value, RdsError> {
        match request.get("DbClusterIdentifier").and_then(Value::as_str) {
            Some(id) => {
                let c = read_json(&self.cluster_file(id))
                    .ok_or_else(|| RdsError::new(CLUSTER_NOT_FOUND, format!("DB cluster {id} not found")))?;
                Ok(json!({"DbClusters": [public(c)]}))
            }
            None => Ok(json!({"DbClusters": self.all("clusters", "")})),
        }
    }

    /// Stops the server and removes the instance; RDS answers `deleting` and the instance is gone soon after.
    fn delete_instance(&self, request: &Value) -> Result<Value, RdsError> {
        let id = field(request, "DbInstanceIdentifier", "deleteDBInstance")?;
        let mut record = self.instance(id)?;
        let dir = self.instance_dir(id);
        let _ = std::fs::remove_file(dir.join("instance.json"));
        stop(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        record["DbInstanceStatus"] = json!("deleting");
        Ok(json!({"DbInstance": public(record)}))
    }

    fn delete_cluster(&self, request: &Value) -> Result<Value, RdsError> {
        let id = field(request, "DbClusterIdentifier", "deleteDBCluster")?;
        let path = self.cluster_file(id);
        let mut record =
            read_json(&path).ok_or_else(|| RdsError::new(CLUSTER_NOT_FOUND, format!("DB cluster {id} not found")))?;
        let members: Vec<String> = record["DbClusterMembers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["DbInstanceIdentifier"].as_str().map(str::to_string))
            .filter(|m| self.instance_dir(m).join("instance.json").exists())
            .collect();
        if !members.is_empty() {
            return Err(RdsError::new(
                "Rds.InvalidDbClusterStateException",
                format!("Cluster cannot be deleted, it still contains DB instances in non-deleting state: {members:?}"),
            ));
        }
        let _ = std::fs::remove_file(&path);
        record["Status"] = json!("deleting");
        Ok(json!({"DbCluster": public(record)}))
    }
}

/// A record as RDS shows it: the stand-in's bookkeeping (`OwnerPid`) becomes whether the process that restored it
/// still runs (`OwnerAlive`, which no AWS response has: the sweep reads it only when present).
fn public(mut record: Value) -> Value {
    if let Some(pid) = record.as_object_mut().and_then(|m| m.remove("OwnerPid")) {
        record["OwnerAlive"] = json!(pid.as_u64().is_some_and(pid_alive));
    }
    record
}

/// A connection string without its password, as the snapshot records its source.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

impl Rds for LocalRds {
    fn call<'a>(&'a self, action: &'a str, request: Value) -> BoxFuture<'a, Result<Value, RdsError>> {
        let me = self.clone();
        let action = action.to_string();
        Box::pin(async move {
            // The stand-in does file and process work: off the async threads.
            tokio::task::spawn_blocking(move || me.dispatch(&action, &request))
                .await
                .map_err(|e| io("the RDS stand-in", e))?
        })
    }
}

impl LocalRds {
    fn dispatch(&self, action: &str, request: &Value) -> Result<Value, RdsError> {
        match action {
            "describeDBSnapshots" => self.describe_snapshots(request, false),
            "describeDBClusterSnapshots" => self.describe_snapshots(request, true),
            "restoreDBInstanceFromDBSnapshot" => self.restore_instance(request),
            "restoreDBClusterFromSnapshot" => self.restore_cluster(request),
            "createDBInstance" => self.create_instance(request),
            "describeDBInstances" => self.describe_instances(request),
            "describeDBClusters" => self.describe_clusters(request),
            "deleteDBInstance" => self.delete_instance(request),
            "deleteDBCluster" => self.delete_cluster(request),
            other => Err(RdsError::new(
                "Rds.InvalidActionException",
                format!("the local RDS stand-in does not implement {other}"),
            )),
        }
    }
}

/// The name a local source goes by as an RDS database: its database name from the URL (`postgres` when absent).
fn source_name(url: &str) -> String {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    let db = path.split_once('/').map_or("", |(_, db)| db);
    let db = db.split(['?', '#']).next().unwrap_or_default();
    if db.is_empty() {
        "postgres".into()
    } else {
        db.to_string()
    }
}
