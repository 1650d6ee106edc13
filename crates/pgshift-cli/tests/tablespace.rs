//! `pgshift snapshot create` of a server with a user tablespace: refused up front, naming the tablespace, and nothing
//! left behind; once the tablespace is gone, the snapshot is taken. Its own test binary: a tablespace is the whole
//! cluster's, and no other test's snapshot may meet it.

use std::process::Command;

use pgshift_tests::{cluster, connect};

/// The server's uid and gid when the tests run as root (the server then runs as `postgres`).
fn server_owner() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    let me = Command::new("id").arg("-u").output().ok()?;
    (String::from_utf8_lossy(&me.stdout).trim() == "0").then_some(())?;
    Some((id("-u")?, id("-g")?))
}

#[test]
fn a_server_with_a_user_tablespace_is_refused_up_front_naming_it() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let dir = pgshift_tests::fresh_dir("tablespace");
    let location = dir.join("ts");
    std::fs::create_dir_all(&location)?;
    if let Some((uid, gid)) = server_owner() {
        std::os::unix::fs::chown(&location, Some(uid), Some(gid))?;
    }
    let src = rt.block_on(async {
        let src = cluster().create_db("tssrc").await?;
        let c = connect(&src).await?;
        c.batch_execute(&format!("CREATE TABLESPACE ts_extra LOCATION '{}'", location.display()))
            .await?;
        c.batch_execute(
            "CREATE TABLE public.t (id int8 PRIMARY KEY) TABLESPACE ts_extra; INSERT INTO public.t VALUES (1);",
        )
        .await?;
        anyhow::Ok(src)
    })?;
    let snapshots = dir.join("snapshots");
    let create = |id: &str| {
        Command::new(env!("CARGO_BIN_EXE_pgshift"))
            .args(["snapshot", "create", "--source", &src, "--id", id, "--snapshot-dir"])
            .arg(&snapshots)
            .output()
    };
    let out = create("with-ts")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("ts_extra")
            && stderr.contains(&location.display().to_string())
            && stderr.contains("pg_default"),
        "{stderr}"
    );
    let left: Vec<_> = std::fs::read_dir(&snapshots)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    assert!(
        left.iter().all(|p| !p.to_string_lossy().contains("with-ts")),
        "nothing left: {left:?}"
    );

    // The tablespace gone, the snapshot is taken.
    rt.block_on(async {
        let c = connect(&src).await?;
        c.batch_execute("ALTER TABLE public.t SET TABLESPACE pg_default")
            .await?;
        c.batch_execute("DROP TABLESPACE ts_extra").await?;
        anyhow::Ok(())
    })?;
    let out = create("without-ts")?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
