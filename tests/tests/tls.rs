//! TLS to PostgreSQL, for real: the test cluster serves TLS with a certificate of a test CA, and each `sslmode` of the
//! source connector gives the connection libpq would.

use anyhow::Result;
use pgshift::source::{PgConnector, SourceConnector};
use pgshift_tests::{cluster, stage_dir, test_certificates};

/// Whether the connector's session is encrypted, as the server sees it.
async fn encrypted(url: &str) -> Result<bool> {
    let client = PgConnector::new(url)?.connect().await?;
    let row = client
        .query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[])
        .await?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sslmode_connects_as_libpq_would() -> Result<()> {
    let c = cluster();
    let url = c.create_db("tls").await?;
    let root = c.certificate_authority().display().to_string();
    assert!(
        encrypted(&url).await?,
        "prefer (the default) encrypts when the server offers TLS"
    );
    assert!(encrypted(&format!("{url}?sslmode=require")).await?);
    assert!(!encrypted(&format!("{url}?sslmode=disable")).await?);
    assert!(encrypted(&format!("{url}?sslmode=verify-full&sslrootcert={root}")).await?);
    assert!(encrypted(&format!("{url}?sslmode=verify-ca&sslrootcert={root}")).await?);

    // Another root: the server's certificate does not chain to it.
    let other = test_certificates(&stage_dir("tls"), "other")?;
    let e = PgConnector::new(&format!("{url}?sslmode=verify-full&sslrootcert={}", other.display()))?
        .connect()
        .await
        .expect_err("an unknown issuer is refused");
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");
    // No retry can make the certificate verify: it fails at once.
    assert_eq!(e.name(), "Pipeline.Fatal.PermissionDenied");

    // verify-full compares the host name; verify-ca does not. The certificate names localhost and 127.0.0.1 only.
    let by_name = url.replace("127.0.0.1", "localhost");
    assert!(encrypted(&format!("{by_name}?sslmode=verify-full&sslrootcert={root}")).await?);
    Ok(())
}
