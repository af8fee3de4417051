//! The thin SQL layer both store backends implement: a [`Connection`] with `execute`,
//! `query_row`, `prepare_cached`, `transaction`, rows read with `get`, and one
//! [`Value`] enum every parameter and column goes through. It mirrors the part of
//! rusqlite's API the store uses, so each operation reads the same on SQLite and on
//! PostgreSQL; the SQL itself is written in the dialect both accept (`?N`
//! placeholders, translated to `$N` for PostgreSQL once per statement text).
//!
//! Rows are read eagerly (`query_map` collects), which suits the store's small result
//! sets and lets the PostgreSQL side keep no borrow of its client across calls.

use std::cell::RefCell;

use super::StoreError;
use super::pg::PgSession;

/// One SQL value, as bound or read.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// Any integer (and booleans, as 0/1).
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(String),
    /// Bytes.
    Blob(Vec<u8>),
}

/// A column as read, borrowed from its row.
#[derive(Debug, Clone, Copy)]
pub enum ValueRef<'a> {
    /// NULL.
    Null,
    /// Any integer (and booleans, as 0/1).
    Integer(i64),
    /// A floating-point number.
    Real(f64),
    /// Text.
    Text(&'a str),
    /// Bytes.
    Blob(&'a [u8]),
}

impl Value {
    fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(f) => ValueRef::Real(*f),
            Value::Text(s) => ValueRef::Text(s),
            Value::Blob(b) => ValueRef::Blob(b),
        }
    }
}

/// A Rust value the store binds as a parameter.
pub trait ToSql {
    /// The value to bind; fails for an integer out of SQL's range.
    fn to_value(&self) -> Result<Value, StoreError>;
}

/// A Rust value the store reads from a column.
pub trait FromSql: Sized {
    /// Converts the column, or says why it cannot.
    fn from_sql(v: ValueRef<'_>) -> Result<Self, String>;
}

fn too_large(v: impl std::fmt::Display) -> StoreError {
    StoreError::Bind(format!("{v} does not fit a 64-bit SQL integer"))
}

macro_rules! integer_to_sql {
    ($($t:ty),*) => {$(
        impl ToSql for $t {
            fn to_value(&self) -> Result<Value, StoreError> {
                i64::try_from(*self).map(Value::Integer).map_err(|_| too_large(self))
            }
        }
        impl FromSql for $t {
            fn from_sql(v: ValueRef<'_>) -> Result<Self, String> {
                match v {
                    ValueRef::Integer(i) => <$t>::try_from(i)
                        .map_err(|_| format!("{i} is out of range for {}", stringify!($t))),
                    other => Err(format!("expected an integer, found {other:?}")),
                }
            }
        }
    )*};
}
integer_to_sql!(i64, u64, i32, u32, usize);

impl ToSql for bool {
    fn to_value(&self) -> Result<Value, StoreError> {
        Ok(Value::Integer(i64::from(*self)))
    }
}

impl FromSql for bool {
    fn from_sql(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Integer(i) => Ok(i != 0),
            other => Err(format!("expected a boolean, found {other:?}")),
        }
    }
}

impl ToSql for f64 {
    fn to_value(&self) -> Result<Value, StoreError> {
        Ok(Value::Real(*self))
    }
}

impl FromSql for f64 {
    fn from_sql(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Real(f) => Ok(f),
            ValueRef::Integer(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
}

impl ToSql for str {
    fn to_value(&self) -> Result<Value, StoreError> {
        Ok(Value::Text(self.to_owned()))
    }
}

impl ToSql for String {
    fn to_value(&self) -> Result<Value, StoreError> {
        Ok(Value::Text(self.clone()))
    }
}

impl FromSql for String {
    fn from_sql(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Text(s) => Ok(s.to_owned()),
            other => Err(format!("expected text, found {other:?}")),
        }
    }
}

impl ToSql for Vec<u8> {
    fn to_value(&self) -> Result<Value, StoreError> {
        Ok(Value::Blob(self.clone()))
    }
}

impl FromSql for Vec<u8> {
    fn from_sql(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Blob(b) => Ok(b.to_vec()),
            other => Err(format!("expected bytes, found {other:?}")),
        }
    }
}

impl ToSql for Value {
    fn to_value(&self) -> Result<Value, StoreError> {
        Ok(self.clone())
    }
}

impl<T: ToSql + ?Sized> ToSql for &T {
    fn to_value(&self) -> Result<Value, StoreError> {
        (**self).to_value()
    }
}

impl<T: ToSql> ToSql for Option<T> {
    fn to_value(&self) -> Result<Value, StoreError> {
        self.as_ref().map_or(Ok(Value::Null), ToSql::to_value)
    }
}

impl<T: FromSql> FromSql for Option<T> {
    fn from_sql(v: ValueRef<'_>) -> Result<Self, String> {
        match v {
            ValueRef::Null => Ok(None),
            v => T::from_sql(v).map(Some),
        }
    }
}

/// Parameters, as `params![a, b]` builds them.
pub type Params<'a> = &'a [&'a dyn ToSql];

/// `params![a, b, c]`: the store's positional parameters (`?1`, `?2`, `?3`).
macro_rules! params {
    () => { &[] as &[&dyn $crate::store::sql::ToSql] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::store::sql::ToSql),+] as &[&dyn $crate::store::sql::ToSql] };
}
pub(crate) use params;

pub(super) fn values(params: Params<'_>) -> Result<Vec<Value>, StoreError> {
    params.iter().map(|p| p.to_value()).collect()
}

/// A column index (`r.get(0)`).
pub trait ColumnIndex {
    /// The index, from 0.
    fn index(self) -> usize;
}

impl ColumnIndex for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
pub enum Row<'a> {
    /// A SQLite row, read in place.
    Sqlite(&'a rusqlite::Row<'a>),
    /// A PostgreSQL row, read into values.
    Values(&'a [Value]),
}

impl Row<'_> {
    /// Column `i` as a `T`.
    pub fn get<I: ColumnIndex, T: FromSql>(&self, i: I) -> Result<T, StoreError> {
        let i = i.index();
        let decoded = match self {
            Row::Sqlite(r) => {
                let v = r.get_ref(i)?;
                T::from_sql(match v {
                    rusqlite::types::ValueRef::Null => ValueRef::Null,
                    rusqlite::types::ValueRef::Integer(n) => ValueRef::Integer(n),
                    rusqlite::types::ValueRef::Real(f) => ValueRef::Real(f),
                    rusqlite::types::ValueRef::Text(t) => {
                        ValueRef::Text(std::str::from_utf8(t).map_err(|e| StoreError::Column {
                            index: i,
                            message: e.to_string(),
                        })?)
                    }
                    rusqlite::types::ValueRef::Blob(b) => ValueRef::Blob(b),
                })
            }
            Row::Values(vs) => {
                let v = vs.get(i).ok_or_else(|| StoreError::Column {
                    index: i,
                    message: format!("the row has {} columns", vs.len()),
                })?;
                T::from_sql(v.as_ref())
            }
        };
        decoded.map_err(|message| StoreError::Column { index: i, message })
    }
}

/// `.optional()`: a query that found no row is `None`, not an error.
pub trait OptionalExtension<T> {
    /// `Ok(None)` for [`StoreError::NoRow`].
    fn optional(self) -> Result<Option<T>, StoreError>;
}

impl<T> OptionalExtension<T> for Result<T, StoreError> {
    fn optional(self) -> Result<Option<T>, StoreError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NoRow) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Which SQL dialect a connection speaks, for the rare statement without a form both
/// accept (a list parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection to the store's database; one per store, behind its mutex.
pub struct Connection(pub(super) Backend);

pub(super) enum Backend {
    Sqlite(rusqlite::Connection),
    Postgres(Box<RefCell<PgSession>>),
}

impl Connection {
    /// Which dialect it speaks.
    pub fn dialect(&self) -> Dialect {
        match &self.0 {
            Backend::Sqlite(_) => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// The SQLite connection, for what only SQLite has (pragmas, query plans).
    pub fn sqlite(&self) -> Option<&rusqlite::Connection> {
        match &self.0 {
            Backend::Sqlite(c) => Some(c),
            Backend::Postgres(_) => None,
        }
    }

    /// Runs a statement; returns how many rows it changed.
    pub fn execute(&self, sql: &str, params: Params<'_>) -> Result<usize, StoreError> {
        self.prepare_cached(sql)?.execute(params)
    }

    /// The first row of a query, mapped by `f`; [`StoreError::NoRow`] without one.
    pub fn query_row<T, F>(&self, sql: &str, params: Params<'_>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Row<'_>) -> Result<T, StoreError>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// A statement, kept for reuse.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>, StoreError> {
        Ok(match &self.0 {
            Backend::Sqlite(c) => Statement::Sqlite(c.prepare_cached(sql)?),
            Backend::Postgres(s) => {
                let prepared = s.borrow_mut().prepare(sql)?;
                Statement::Postgres {
                    session: s,
                    prepared,
                }
            }
        })
    }

    /// A statement used once (PostgreSQL keeps every statement anyway).
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>, StoreError> {
        match &self.0 {
            Backend::Sqlite(c) => Ok(Statement::SqliteOnce(c.prepare(sql)?)),
            Backend::Postgres(_) => self.prepare_cached(sql),
        }
    }

    /// Begins a transaction, committed by [`Transaction::commit`] and rolled back when
    /// dropped without it. On PostgreSQL every store call already runs in one
    /// transaction: this one only decides whether that call commits.
    pub fn transaction(&self) -> Result<Transaction<'_>, StoreError> {
        let sqlite = match &self.0 {
            Backend::Sqlite(c) => Some(c.unchecked_transaction()?),
            Backend::Postgres(s) => {
                s.borrow_mut().begin()?;
                None
            }
        };
        Ok(Transaction {
            conn: self,
            sqlite,
            committed: false,
        })
    }
}

/// A transaction; reads and writes go through it as through its connection.
pub struct Transaction<'a> {
    conn: &'a Connection,
    sqlite: Option<rusqlite::Transaction<'a>>,
    committed: bool,
}

impl Transaction<'_> {
    /// Commits (on PostgreSQL: lets the call commit when it ends).
    pub fn commit(mut self) -> Result<(), StoreError> {
        self.committed = true;
        if let Some(tx) = self.sqlite.take() {
            tx.commit()?;
        }
        Ok(())
    }
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        // SQLite's transaction rolls back as it drops; PostgreSQL's call is told to.
        if !self.committed
            && let Backend::Postgres(s) = &self.conn.0
        {
            s.borrow_mut().rollback_at_end();
        }
    }
}

impl std::ops::Deref for Transaction<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

/// A prepared statement.
pub enum Statement<'a> {
    /// From SQLite's statement cache.
    Sqlite(rusqlite::CachedStatement<'a>),
    /// A SQLite statement used once.
    SqliteOnce(rusqlite::Statement<'a>),
    /// A PostgreSQL statement (kept per connection).
    Postgres {
        /// The connection's session.
        session: &'a RefCell<PgSession>,
        /// The statement and what it does.
        prepared: super::pg::Prepared,
    },
}

impl<'a> Statement<'a> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'a>> {
        match self {
            Statement::Sqlite(s) => Some(s),
            Statement::SqliteOnce(s) => Some(s),
            Statement::Postgres { .. } => None,
        }
    }

    /// Runs it; returns how many rows it changed.
    pub fn execute(&mut self, params: Params<'_>) -> Result<usize, StoreError> {
        let values = values(params)?;
        if let Some(s) = self.sqlite() {
            return Ok(s.execute(rusqlite::params_from_iter(values.iter()))?);
        }
        let Statement::Postgres { session, prepared } = self else {
            unreachable!("not SQLite")
        };
        session.borrow_mut().execute(prepared, &values)
    }

    /// Every row, each mapped by `f` (read eagerly).
    pub fn query_map<T, F>(
        &mut self,
        params: Params<'_>,
        mut f: F,
    ) -> Result<std::vec::IntoIter<Result<T, StoreError>>, StoreError>
    where
        F: FnMut(&Row<'_>) -> Result<T, StoreError>,
    {
        let values = values(params)?;
        let mut out = Vec::new();
        if let Some(s) = self.sqlite() {
            let mut rows = s.query(rusqlite::params_from_iter(values.iter()))?;
            while let Some(r) = rows.next()? {
                out.push(f(&Row::Sqlite(r)));
            }
            return Ok(out.into_iter());
        }
        let Statement::Postgres { session, prepared } = self else {
            unreachable!("not SQLite")
        };
        let rows = session.borrow_mut().query(prepared, &values)?;
        for r in &rows {
            out.push(f(&Row::Values(r)));
        }
        Ok(out.into_iter())
    }

    /// The first row, mapped by `f`; [`StoreError::NoRow`] without one.
    pub fn query_row<T, F>(&mut self, params: Params<'_>, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Row<'_>) -> Result<T, StoreError>,
    {
        let values = values(params)?;
        if let Some(s) = self.sqlite() {
            let mut rows = s.query(rusqlite::params_from_iter(values.iter()))?;
            return match rows.next()? {
                Some(r) => f(&Row::Sqlite(r)),
                None => Err(StoreError::NoRow),
            };
        }
        let Statement::Postgres { session, prepared } = self else {
            unreachable!("not SQLite")
        };
        let rows = session.borrow_mut().query(prepared, &values)?;
        match rows.first() {
            Some(r) => f(&Row::Values(r)),
            None => Err(StoreError::NoRow),
        }
    }
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef as R};
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => R::Null,
            Value::Integer(i) => R::Integer(*i),
            Value::Real(f) => R::Real(*f),
            Value::Text(s) => R::Text(s.as_bytes()),
            Value::Blob(b) => R::Blob(b),
        }))
    }
}
