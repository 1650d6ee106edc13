//! Layer 1, what libpq fills in that a connection string leaves out, so that pgshift connects as `psql` does with the
//! same string and environment: `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGAPPNAME`, `PGCONNECT_TIMEOUT`,
//! `PGSSLMODE`, `PGSSLROOTCERT`, and the password from `PGPASSWORD` or the password file (`PGPASSFILE`, else
//! `~/.pgpass`, ignored unless only its owner can read it). What the string says always wins over the environment.
//! <https://www.postgresql.org/docs/current/libpq-envars.html>,
//! <https://www.postgresql.org/docs/current/libpq-pgpass.html>.

use std::path::{Path, PathBuf};

/// The environment, as a lookup: the process's ([`process_vars`]), or a test's.
pub(crate) type Vars<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment; an empty variable counts as unset, as libpq counts it.
pub(crate) fn process_vars(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// Where the password came from, or every place looked at when there was none: what an authentication error says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PasswordOrigin(pub(crate) String);

impl Default for PasswordOrigin {
    fn default() -> Self {
        PasswordOrigin("set by the caller".into())
    }
}

/// The string with `sslmode` and `sslrootcert` from `PGSSLMODE` and `PGSSLROOTCERT` where it has none: the string
/// decides TLS ([`super::tls`]), so the environment's values join it there.
pub(crate) fn with_ssl_env(conn: &str, vars: Vars) -> String {
    let url = conn.contains("://");
    let mut out = conn.to_string();
    for (key, var) in [("sslmode", "PGSSLMODE"), ("sslrootcert", "PGSSLROOTCERT")] {
        let Some(v) = vars(var).filter(|_| !has_param(conn, key)) else {
            continue;
        };
        if url {
            out.push(if out.contains('?') { '&' } else { '?' });
            out.push_str(&format!("{key}={}", encode(&v)));
        } else {
            out.push_str(&format!(" {key}={v}"));
        }
    }
    out
}

fn has_param(conn: &str, key: &str) -> bool {
    let params: Vec<&str> = match conn.split_once("://") {
        Some((_, rest)) => rest.split_once('?').map_or("", |(_, q)| q).split('&').collect(),
        None => conn.split_whitespace().collect(),
    };
    params.iter().any(|p| p.split_once('=').map_or(*p, |(k, _)| k) == key)
}

/// Percent-encodes all but the characters a URL query value keeps as they are.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Fills in what the string left out, from the environment and libpq's defaults (a host: the local socket directory
/// that has the server's socket, else `localhost`; a user: the login name), and finds the password.
pub(crate) fn fill(config: &mut tokio_postgres::Config, vars: Vars) -> PasswordOrigin {
    if config.get_ports().is_empty() {
        if let Some(p) = vars("PGPORT").and_then(|p| p.parse::<u16>().ok()) {
            config.port(p);
        }
    }
    if config.get_hosts().is_empty() {
        let port = config.get_ports().first().copied().unwrap_or(5432);
        match vars("PGHOST") {
            Some(hosts) => hosts.split(',').for_each(|h| {
                config.host(h.trim());
            }),
            None => {
                config.host(default_host(port));
            }
        }
    }
    if config.get_user().is_none() {
        if let Some(u) = vars("PGUSER").or_else(|| vars("USER")).or_else(|| vars("LOGNAME")) {
            config.user(&u);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(d) = vars("PGDATABASE") {
            config.dbname(&d);
        }
    }
    if config.get_application_name().is_none() {
        if let Some(a) = vars("PGAPPNAME") {
            config.application_name(&a);
        }
    }
    if config.get_connect_timeout().is_none() {
        if let Some(s) = vars("PGCONNECT_TIMEOUT")
            .and_then(|s| s.parse::<u64>().ok())
            .filter(|s| *s > 0)
        {
            config.connect_timeout(std::time::Duration::from_secs(s.max(2)));
        }
    }
    password(config, vars)
}

/// libpq's default host: the socket directory that holds this port's socket, else `localhost`.
fn default_host(port: u16) -> String {
    ["/var/run/postgresql", "/tmp"]
        .into_iter()
        .find(|d| Path::new(d).join(format!(".s.PGSQL.{port}")).exists())
        .unwrap_or("localhost")
        .to_string()
}

/// The password: the string's, else `PGPASSWORD`, else the password file's line for this host, port, database and
/// user.
fn password(config: &mut tokio_postgres::Config, vars: Vars) -> PasswordOrigin {
    if config.get_password().is_some() {
        return PasswordOrigin("the password in the connection string".into());
    }
    if let Some(p) = vars("PGPASSWORD") {
        config.password(p);
        return PasswordOrigin("PGPASSWORD".into());
    }
    let file = vars("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| vars("HOME").map(|h| Path::new(&h).join(".pgpass")));
    let Some(file) = file else {
        return PasswordOrigin(
            "none: the connection string has none, PGPASSWORD is unset, and there is no password file (PGPASSFILE \
             and HOME are unset)"
                .into(),
        );
    };
    let key = Key::of(config);
    match lookup(&file, &key) {
        Ok((pw, line)) => {
            config.password(pw);
            PasswordOrigin(format!("{} line {line}", file.display()))
        }
        Err(why) => PasswordOrigin(format!(
            "none: the connection string has none, PGPASSWORD is unset, and {} {why}",
            file.display()
        )),
    }
}

/// What a password file line is matched against.
#[derive(Debug)]
struct Key {
    host: String,
    port: String,
    database: String,
    user: String,
}

impl Key {
    fn of(c: &tokio_postgres::Config) -> Self {
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            // A socket connection matches `localhost`, as in libpq.
            _ => "localhost".into(),
        };
        let user = c.get_user().unwrap_or_default().to_string();
        Key {
            host,
            port: c.get_ports().first().copied().unwrap_or(5432).to_string(),
            database: c.get_dbname().map_or_else(|| user.clone(), str::to_string),
            user,
        }
    }
}

/// The password and line number of the first line of `file` that matches, or why there is none.
fn lookup(file: &Path, key: &Key) -> Result<(String, usize), String> {
    let meta = std::fs::metadata(file).map_err(|e| format!("cannot be read ({e})"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "is ignored: its permissions ({:o}) let others read it; chmod 0600 it",
                mode & 0o777
            ));
        }
    }
    if !meta.is_file() {
        return Err("is not a file".into());
    }
    let text = std::fs::read_to_string(file).map_err(|e| format!("cannot be read ({e})"))?;
    let wanted = [&key.host, &key.port, &key.database, &key.user];
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
        .find_map(|(i, l)| matches(l, &wanted).map(|pw| (pw, i + 1)))
        .ok_or_else(|| {
            format!(
                "has no line for {}:{}:{}:{}",
                key.host, key.port, key.database, key.user
            )
        })
}

/// The password of a line whose first four fields match (`*` matches anything; `\` escapes `:` and `\`).
fn matches(line: &str, wanted: &[&String; 4]) -> Option<String> {
    let mut chars = line.chars();
    for want in wanted {
        let mut field = String::new();
        let mut ended = false;
        while let Some(c) = chars.next() {
            match c {
                '\\' => field.extend(chars.next()),
                ':' => {
                    ended = true;
                    break;
                }
                c => field.push(c),
            }
        }
        if !ended || (field != "*" && field != **want) {
            return None;
        }
    }
    let mut pw = String::new();
    while let Some(c) = chars.next() {
        match c {
            '\\' => pw.extend(chars.next()),
            c => pw.push(c),
        }
    }
    Some(pw)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn filled(conn: &str, env: &[(&str, &str)]) -> (tokio_postgres::Config, PasswordOrigin) {
        let mut c: tokio_postgres::Config = conn.parse().expect("parses");
        let o = fill(&mut c, &vars(env));
        (c, o)
    }

    #[test]
    fn the_environment_fills_what_the_string_leaves_out_and_never_more() {
        let env = [
            ("PGHOST", "db.internal"),
            ("PGPORT", "6543"),
            ("PGUSER", "etl"),
            ("PGDATABASE", "sales"),
            ("PGPASSWORD", "s3cret"),
            ("PGAPPNAME", "nightly"),
        ];
        let (c, o) = filled("postgres://", &env);
        assert_eq!(
            c.get_hosts(),
            &[tokio_postgres::config::Host::Tcp("db.internal".into())]
        );
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!((c.get_user(), c.get_dbname()), (Some("etl"), Some("sales")));
        assert_eq!(c.get_password(), Some(&b"s3cret"[..]));
        assert_eq!(c.get_application_name(), Some("nightly"));
        assert_eq!(o.0, "PGPASSWORD");
        let (c, o) = filled("postgres://u:pw@h:5432/db?application_name=x", &env);
        assert_eq!(c.get_hosts(), &[tokio_postgres::config::Host::Tcp("h".into())]);
        assert_eq!(
            (c.get_ports(), c.get_user(), c.get_dbname()),
            (&[5432][..], Some("u"), Some("db"))
        );
        assert_eq!(
            (c.get_password(), c.get_application_name()),
            (Some(&b"pw"[..]), Some("x"))
        );
        assert!(o.0.contains("connection string"), "{o:?}");
    }

    #[test]
    fn the_ssl_settings_join_the_string_unless_it_has_them() {
        let env = vars(&[
            ("PGSSLMODE", "verify-full"),
            ("PGSSLROOTCERT", "/etc/ssl/rds bundle.pem"),
        ]);
        assert_eq!(
            with_ssl_env("postgres://u@h/db", &env),
            "postgres://u@h/db?sslmode=verify-full&sslrootcert=/etc/ssl/rds%20bundle.pem"
        );
        assert_eq!(
            with_ssl_env("postgres://u@h/db?sslmode=disable", &env),
            "postgres://u@h/db?sslmode=disable&sslrootcert=/etc/ssl/rds%20bundle.pem"
        );
        assert_eq!(
            with_ssl_env("host=h sslrootcert=/x.pem", &env),
            "host=h sslrootcert=/x.pem sslmode=verify-full"
        );
    }

    #[test]
    fn the_password_file_is_read_as_libpq_reads_it() {
        let dir = std::env::temp_dir().join(format!("pgshift-pgpass-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("pgpass");
        std::fs::write(
            &file,
            "# comment\nother:5432:*:etl:nope\ndb.internal:5432:sales:etl:a\\:b\\\\c:d\n*:*:*:*:fallback\n",
        )
        .expect("write");
        let set_mode = |m: u32| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(m)).expect("chmod");
        };
        set_mode(0o600);
        let path = file.display().to_string();
        let env = [("PGPASSFILE", path.as_str())];
        let (c, o) = filled("postgres://etl@db.internal/sales", &env);
        assert_eq!(c.get_password(), Some(&b"a:b\\c:d"[..]));
        assert_eq!(o.0, format!("{path} line 3"));
        let (c, o) = filled("postgres://x@elsewhere:1/y", &env);
        assert_eq!(
            (c.get_password(), o.0),
            (Some(&b"fallback"[..]), format!("{path} line 4"))
        );
        set_mode(0o644);
        let (c, o) = filled("postgres://etl@db.internal/sales", &env);
        assert_eq!(c.get_password(), None);
        assert!(
            o.0.contains("chmod 0600") && o.0.contains("PGPASSWORD is unset"),
            "{o:?}"
        );
        std::fs::write(&file, "other:5432:*:etl:nope\n").expect("write");
        set_mode(0o600);
        let (_, o) = filled("postgres://etl@db.internal/sales", &env);
        assert!(o.0.contains("has no line for db.internal:5432:sales:etl"), "{o:?}");
        let (_, o) = filled("postgres://etl@db.internal/sales", &[("HOME", "/nonexistent")]);
        assert!(o.0.contains("/nonexistent/.pgpass cannot be read"), "{o:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
