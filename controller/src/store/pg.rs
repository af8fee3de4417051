//! The PostgreSQL backend: one synchronous `postgres` client per store (replicas
//! serialise their own writers, as SQLite does), on the blocking pool.
//!
//! Every store call that writes runs in one transaction, begun at its first write (or
//! its `transaction()`), whose first write statement is preceded by the leader check
//! of [`Fence`]: a controller that is no longer the leader writes nothing. Reads never
//! check. Statements are prepared once per connection, their `?N` placeholders
//! translated to `$N` once per text. A lost connection is dropped here and
//! re-established by the next call ([`super::Store`]'s retry loop).

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::Arc;

use postgres::Client;
use postgres::types::{IsNull, ToSql as PgToSql, Type};

use super::pg_tls::{self, Connector, PgTls};

use super::fence::Fence;
use super::sql::Value;
use super::{StoreError, pg_schema};

/// How a PostgreSQL store behaves when its database goes away.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// How long one store call keeps reconnecting and retrying before it fails.
    pub retry_for: std::time::Duration,
    /// TLS to the server (off by default: a socket or loopback).
    pub tls: PgTls,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            retry_for: std::time::Duration::from_secs(30),
            tls: PgTls::default(),
        }
    }
}

/// A prepared statement and whether it writes.
#[derive(Clone)]
pub struct Prepared {
    statement: postgres::Statement,
    writes: bool,
}

/// One connection and the state of the store call running on it.
pub struct PgSession {
    /// Where to (re)connect.
    url: String,
    /// TLS to the server, or none.
    tls: PgTls,
    /// The client; `None` once its connection was lost, until the next call reconnects.
    client: Option<Client>,
    /// Statements of this client, by the store's SQL text.
    statements: HashMap<String, Prepared>,
    /// Whose leadership writes are checked against.
    fence: Arc<Fence>,
    /// The call's transaction is open.
    in_tx: bool,
    /// The leader check ran in this transaction.
    fenced: bool,
    /// A `transaction()` was dropped without commit: the call rolls back.
    rollback: bool,
}

impl PgSession {
    /// Connects to `url`.
    pub(super) fn connect(url: &str, fence: Arc<Fence>, tls: PgTls) -> Result<Self, StoreError> {
        let mut s = Self {
            url: url.to_owned(),
            tls,
            client: None,
            statements: HashMap::new(),
            fence,
            in_tx: false,
            fenced: false,
            rollback: false,
        };
        s.client()?;
        Ok(s)
    }

    /// Brings the schema up to date (see [`pg_schema`]).
    pub(super) fn migrate(&mut self) -> Result<(), StoreError> {
        pg_schema::migrate(self.client()?)
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.is_none() {
            self.statements.clear();
            let config: postgres::Config = self.url.parse()?;
            let tcp = pg_tls::over_tcp(config.get_hosts());
            self.client = Some(match self.tls.connector(config.get_ssl_mode(), tcp)? {
                Connector::Plain => config.connect(postgres::NoTls)?,
                Connector::Tls(tls) => config.connect(tls)?,
            });
        }
        Ok(self.client.as_mut().expect("connected above"))
    }

    /// Runs one store call: `f`, then the commit (or rollback) of its transaction.
    pub(super) fn finish<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        let result = if self.in_tx {
            let end = if result.is_ok() && !self.rollback {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            // A COMMIT whose connection dies before the answer has an unknown outcome:
            // the call is retried and may apply twice. Compare-and-set writes (a
            // transition) then find their own write and fail with `Stale`; the others
            // are idempotent or append an event line twice.
            let ended = self
                .client
                .as_mut()
                .map_or(Ok(()), |c| c.batch_execute(end).map_err(StoreError::from));
            match (result, ended) {
                (Ok(v), Ok(())) => Ok(v),
                (Err(e), _) | (Ok(_), Err(e)) => Err(e),
            }
        } else {
            result
        };
        self.in_tx = false;
        self.fenced = false;
        self.rollback = false;
        if let Err(e) = &result
            && e.connection_lost()
        {
            self.client = None;
        }
        result
    }

    /// Opens the call's transaction, once.
    pub(super) fn begin(&mut self) -> Result<(), StoreError> {
        if !self.in_tx {
            self.client()?.batch_execute("BEGIN")?;
            self.in_tx = true;
        }
        Ok(())
    }

    pub(super) fn rollback_at_end(&mut self) {
        self.rollback = true;
    }

    /// Prepares `sql` once per connection.
    pub(super) fn prepare(&mut self, sql: &str) -> Result<Prepared, StoreError> {
        if let Some(p) = self.statements.get(sql) {
            return Ok(p.clone());
        }
        let text = translate(sql);
        let statement = self.client()?.prepare(&text)?;
        let p = Prepared {
            statement,
            writes: writes(sql),
        };
        self.statements.insert(sql.to_owned(), p.clone());
        Ok(p)
    }

    /// Before a write: the transaction, and the leader check in it.
    fn before(&mut self, p: &Prepared) -> Result<(), StoreError> {
        if !p.writes || self.fenced {
            return Ok(());
        }
        self.begin()?;
        let Some(epoch) = self.fence.epoch() else {
            self.rollback = true;
            return Err(StoreError::NotLeader { epoch: None });
        };
        let holder = self.fence.holder().to_owned();
        let leading = self.client()?.query_opt(
            "SELECT 1 FROM drover_leader WHERE id = 1 AND holder = $1 AND epoch = $2 FOR SHARE",
            &[&holder, &(epoch as i64)],
        )?;
        if leading.is_none() {
            self.rollback = true;
            return Err(StoreError::NotLeader { epoch: Some(epoch) });
        }
        self.fenced = true;
        Ok(())
    }

    pub(super) fn execute(&mut self, p: &Prepared, values: &[Value]) -> Result<usize, StoreError> {
        self.before(p)?;
        let params: Vec<&(dyn PgToSql + Sync)> = values.iter().map(|v| v as _).collect();
        let n = self.client()?.execute(&p.statement, &params)?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    pub(super) fn query(
        &mut self,
        p: &Prepared,
        values: &[Value],
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        self.before(p)?;
        let params: Vec<&(dyn PgToSql + Sync)> = values.iter().map(|v| v as _).collect();
        let rows = self.client()?.query(&p.statement, &params)?;
        rows.iter().map(read_row).collect()
    }
}

impl Drop for PgSession {
    fn drop(&mut self) {
        // The synchronous client blocks as it closes, which a runtime thread must not:
        // a store dropped by async code closes its connection on the blocking pool.
        if let Some(client) = self.client.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            rt.spawn_blocking(move || drop(client));
        }
    }
}

/// Whether `sql` writes (its first word is INSERT, UPDATE or DELETE).
fn writes(sql: &str) -> bool {
    let first = sql
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or("");
    ["INSERT", "UPDATE", "DELETE"]
        .iter()
        .any(|w| first.eq_ignore_ascii_case(w))
}

/// `?N` (and a bare `?`, numbered after the previous one) to `$N`, outside string
/// literals, quoted identifiers and comments.
pub(super) fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut chars = sql.chars().peekable();
    let mut last = 0u32;
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == c {
                        break;
                    }
                }
            }
            '-' if chars.peek() == Some(&'-') => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '\n' {
                        break;
                    }
                }
            }
            '?' => {
                let mut digits = String::new();
                while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = digits.parse().unwrap_or(last + 1);
                last = n;
                out.push('$');
                out.push_str(&n.to_string());
            }
            c => out.push(c),
        }
    }
    out
}

fn read_row(row: &postgres::Row) -> Result<Vec<Value>, StoreError> {
    (0..row.len())
        .map(|i| {
            let ty = row.columns()[i].type_();
            let v = match *ty {
                Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Integer),
                Type::INT4 => row
                    .try_get::<_, Option<i32>>(i)?
                    .map(|v| Value::Integer(v.into())),
                Type::INT2 => row
                    .try_get::<_, Option<i16>>(i)?
                    .map(|v| Value::Integer(v.into())),
                Type::BOOL => row
                    .try_get::<_, Option<bool>>(i)?
                    .map(|v| Value::Integer(v.into())),
                Type::FLOAT8 => row.try_get::<_, Option<f64>>(i)?.map(Value::Real),
                Type::FLOAT4 => row
                    .try_get::<_, Option<f32>>(i)?
                    .map(|v| Value::Real(v.into())),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
                    row.try_get::<_, Option<String>>(i)?.map(Value::Text)
                }
                Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Blob),
                ref other => {
                    return Err(StoreError::Column {
                        index: i,
                        message: format!("PostgreSQL type {other} is not read by the store"),
                    });
                }
            };
            Ok(v.unwrap_or(Value::Null))
        })
        .collect()
}

impl PgToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let wrong = || format!("cannot bind {self:?} as a PostgreSQL {ty}").into();
        match (self, ty) {
            (Value::Null, _) => Ok(IsNull::Yes),
            (Value::Integer(i), &Type::INT8) => i.to_sql(ty, out),
            (Value::Integer(i), &Type::INT4) => i32::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::INT2) => i16::try_from(*i)?.to_sql(ty, out),
            (Value::Integer(i), &Type::BOOL) => (*i != 0).to_sql(ty, out),
            (Value::Integer(i), &Type::FLOAT8) => (*i as f64).to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT8) => f.to_sql(ty, out),
            (Value::Real(f), &Type::FLOAT4) => (*f as f32).to_sql(ty, out),
            (Value::Text(s), &Type::TEXT | &Type::VARCHAR | &Type::BPCHAR | &Type::NAME) => {
                s.to_sql(ty, out)
            }
            (Value::Blob(b), &Type::BYTEA) => b.to_sql(ty, out),
            _ => Err(wrong()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    fn to_sql_checked(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        self.to_sql(ty, out)
    }
}

impl StoreError {
    /// Whether this failure is the database connection going away (the call may be
    /// retried on a new one): a closed connection, an I/O error, SQLSTATE class 08,
    /// `admin_shutdown` or `cannot_connect_now`.
    pub(super) fn connection_lost(&self) -> bool {
        let StoreError::Postgres(e) = self else {
            return false;
        };
        if e.is_closed() {
            return true;
        }
        if let Some(code) = e.code() {
            let code = code.code();
            return code.starts_with("08") || code == "57P01" || code == "57P03";
        }
        let mut source = e.source();
        while let Some(s) = source {
            if s.is::<std::io::Error>() {
                return true;
            }
            source = s.source();
        }
        false
    }
}

/// `url` without its password (`user:***@host`, `password=***`), for messages.
pub fn redact(url: &str) -> String {
    if let Some(rest) = url
        .strip_prefix("postgres://")
        .map(|r| ("postgres://", r))
        .or_else(|| {
            url.strip_prefix("postgresql://")
                .map(|r| ("postgresql://", r))
        })
    {
        let (scheme, rest) = rest;
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => authority.to_owned(),
            },
            None => authority.to_owned(),
        };
        return format!("{scheme}{authority}{}", redact_password_params(tail));
    }
    redact_password_params(url)
}

/// `password=...` (key-value or query parameter) to `password=***`.
fn redact_password_params(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(at) = rest.find("password=") {
        let before_ok = at == 0 || matches!(rest.as_bytes()[at - 1], b' ' | b'?' | b'&');
        out.push_str(&rest[..at + "password=".len()]);
        rest = &rest[at + "password=".len()..];
        if before_ok {
            let end = rest.find([' ', '&']).unwrap_or(rest.len());
            out.push_str("***");
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_become_numbered_outside_literals() {
        assert_eq!(
            translate("SELECT '?1', \"a?\" FROM t WHERE a = ?1 AND b = ?12 AND c = ? -- ?3\n"),
            "SELECT '?1', \"a?\" FROM t WHERE a = $1 AND b = $12 AND c = $13 -- ?3\n"
        );
        assert_eq!(translate("VALUES (?, ?)"), "VALUES ($1, $2)");
    }

    #[test]
    fn writes_are_told_by_their_first_word() {
        assert!(writes("\n  insert into t values (1)"));
        assert!(writes("UPDATE t SET a = 1 RETURNING a"));
        assert!(writes("DELETE FROM t"));
        assert!(!writes("SELECT 1"));
        assert!(!writes("WITH d AS (SELECT 1) SELECT * FROM d"));
    }

    #[test]
    fn passwords_are_left_out_of_messages() {
        assert_eq!(
            redact("postgres://drover:s3cret@db:5432/drover?sslmode=disable&password=x"),
            "postgres://drover:***@db:5432/drover?sslmode=disable&password=***"
        );
        assert_eq!(
            redact("postgresql://drover@db/drover"),
            "postgresql://drover@db/drover"
        );
        assert_eq!(
            redact("host=/tmp/s user=drover password=s3cret dbname=d"),
            "host=/tmp/s user=drover password=*** dbname=d"
        );
        assert_eq!(redact("host=x old_password=y"), "host=x old_password=y");
    }
}
