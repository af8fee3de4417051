//! Writing many rows in few statements: `INSERT ... VALUES (..), (..)` and
//! `UPDATE ... WHERE host IN (..)` with numbered parameters, in chunks of
//! [`ROWS_PER_STATEMENT`]. On PostgreSQL each statement is a round trip, so a batch's
//! host changes cost a few round trips rather than two per host; SQLite takes the same
//! SQL. Chunks of a fixed size keep the number of distinct statements (each prepared
//! once and kept) small.

use super::StoreError;
use super::sql::{Connection, ToSql, Value};

/// Rows to write, each its values in order.
pub(super) type Rows = Vec<Vec<Value>>;

/// Rows per statement (at most this many distinct statement shapes per kind).
pub(super) const ROWS_PER_STATEMENT: usize = 64;

/// `(?1, ?k, ?k+1, ..), (?1, ..)`: `n` tuples, each the `lead` leading parameters
/// (`?1..?lead`, the same in every tuple) then `width` parameters of its own, numbered
/// from `lead + 1` on.
pub(super) fn tuples(lead: usize, width: usize, n: usize) -> String {
    let mut out = String::new();
    for row in 0..n {
        if row > 0 {
            out.push_str(", ");
        }
        out.push('(');
        let own = (0..width).map(|i| lead + 1 + row * width + i);
        let all: Vec<String> = (1..=lead).chain(own).map(|p| format!("?{p}")).collect();
        out.push_str(&all.join(", "));
        out.push(')');
    }
    out
}

/// `?k, ?k+1, ..`: `n` parameters numbered from `lead + 1` (an `IN` list after `lead`
/// leading ones).
pub(super) fn list(lead: usize, n: usize) -> String {
    (lead + 1..=lead + n)
        .map(|p| format!("?{p}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs `sql(n)` (the statement for `n` rows) over `rows`, [`ROWS_PER_STATEMENT`] at a
/// time, binding `lead` first and then each row's values in order.
pub(super) fn write(
    c: &Connection,
    lead: &[Value],
    rows: &[Vec<Value>],
    sql: impl Fn(usize) -> String,
) -> Result<(), StoreError> {
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let params: Vec<&dyn ToSql> = lead
            .iter()
            .chain(chunk.iter().flatten())
            .map(|v| v as &dyn ToSql)
            .collect();
        c.prepare_cached(&sql(chunk.len()))?.execute(&params)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tuples_repeat_the_leading_parameters_and_number_the_rest() {
        assert_eq!(tuples(1, 2, 3), "(?1, ?2, ?3), (?1, ?4, ?5), (?1, ?6, ?7)");
        assert_eq!(tuples(0, 1, 2), "(?1), (?2)");
        assert_eq!(list(6, 3), "?7, ?8, ?9");
    }
}
