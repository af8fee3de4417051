//! Parsing what HAProxy's runtime API prints: the `show stat` CSV (read by header name,
//! never by column position) and the `show servers state` table (for the admin state,
//! which `show stat` hides while a server is DOWN). Pure functions, no I/O.

use std::collections::HashMap;
use std::fmt;

/// HAProxy's administrative state of a server: what an operator (or Drover) forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AdminState {
    /// Normal: takes part in load balancing when its health checks pass.
    Ready,
    /// Draining: no new load-balanced traffic, still health-checked, existing sessions finish.
    Drain,
    /// Maintenance: no traffic at all and no health checks.
    Maint,
}

impl AdminState {
    /// The word `set server <b>/<s> state <word>` takes.
    pub fn as_command_word(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// Decodes the `srv_admin_state` bit mask of `show servers state`: any maintenance
    /// bit (forced 0x01, inherited 0x02, from config 0x04, DNS resolution 0x20) wins over
    /// any drain bit (forced 0x08, inherited 0x10).
    pub fn from_mask(mask: u32) -> Self {
        const MAINT: u32 = 0x01 | 0x02 | 0x04 | 0x20;
        const DRAIN: u32 = 0x08 | 0x10;
        if mask & MAINT != 0 {
            AdminState::Maint
        } else if mask & DRAIN != 0 {
            AdminState::Drain
        } else {
            AdminState::Ready
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AdminState::Ready => "READY",
            AdminState::Drain => "DRAIN",
            AdminState::Maint => "MAINT",
        })
    }
}

/// The `status` column of `show stat` for a server, by its first word: HAProxy prints
/// transitions as `UP 1/2` (up, one check failed: still in rotation) or `DOWN 1/2` (down,
/// one check passed: not yet in rotation), and `MAINT (via b/s)` for inherited states.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpStatus {
    /// In rotation: `UP`, `UP 1/2`, and `no check` (a server without health checks).
    Up,
    /// Health checks fail (or have not passed `rise` times yet): `DOWN`, `DOWN 1/2`.
    Down,
    /// Up but set to drain: `DRAIN`. A drained server that is DOWN shows `DOWN`.
    Drain,
    /// In maintenance: `MAINT`, `MAINT (via ...)`, `MAINT (resolution)`.
    Maint,
    /// Up but refusing new traffic (`disable-on-404` answered 404): `NOLB`.
    NoLb,
    /// Anything else, verbatim.
    Other(String),
}

impl OpStatus {
    /// Reads one `status` cell.
    pub fn parse(cell: &str) -> Self {
        let cell = cell.trim();
        if cell == "no check" {
            return OpStatus::Up;
        }
        match cell.split_whitespace().next().unwrap_or("") {
            "UP" => OpStatus::Up,
            "DOWN" => OpStatus::Down,
            "DRAIN" => OpStatus::Drain,
            "MAINT" => OpStatus::Maint,
            "NOLB" => OpStatus::NoLb,
            _ => OpStatus::Other(cell.to_string()),
        }
    }
}

impl fmt::Display for OpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpStatus::Up => f.write_str("UP"),
            OpStatus::Down => f.write_str("DOWN"),
            OpStatus::Drain => f.write_str("DRAIN"),
            OpStatus::Maint => f.write_str("MAINT"),
            OpStatus::NoLb => f.write_str("NOLB"),
            OpStatus::Other(s) => f.write_str(s),
        }
    }
}

/// One server as one HAProxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerStatus {
    /// Backend (proxy) name.
    pub backend: String,
    /// Server name inside the backend.
    pub server: String,
    /// Operational status (`status` column).
    pub status: OpStatus,
    /// Administrative state (`srv_admin_state` of `show servers state`).
    pub admin: AdminState,
    /// Sessions attached to this server now (`scur`): zero means drained.
    pub current_sessions: u64,
    /// Sessions since start (`stot`).
    pub total_sessions: u64,
    /// HTTP responses of any class (`hrsp_1xx` .. `hrsp_5xx` + `hrsp_other`).
    pub responses: u64,
    /// HTTP 5xx responses (`hrsp_5xx`).
    pub http_5xx: u64,
    /// Failed connection attempts (`econ`).
    pub conn_errors: u64,
    /// Response errors, including server aborts (`eresp`).
    pub resp_errors: u64,
    /// Average response time over the last 1024 requests, ms (`rtime`).
    pub response_time_ms: u64,
    /// Effective weight (`weight`); 0 means no load-balanced traffic.
    pub weight: u64,
    /// Last health check (`check_status`, e.g. `L7OK`, `L4CON`; `* ` while one runs).
    pub check_status: String,
    /// Human words about the last check (`check_desc` and `last_chk`), for messages.
    pub check_detail: String,
    /// Where the health checks stand (`check_health`): 0 after `fall` failures or a
    /// forced DOWN, UP from `rise`, at most `rise + fall - 1`. HAProxy checks at
    /// `fastinter` or `downinter` below the top and at `inter` once there.
    pub check_health: u64,
    /// `ip:port` the server is reached on (`addr`).
    pub address: String,
}

impl ServerStatus {
    /// Takes part in load balancing right now: UP and admin READY, weight above 0.
    pub fn in_rotation(&self) -> bool {
        self.status == OpStatus::Up && self.admin == AdminState::Ready && self.weight > 0
    }

    /// Do status and admin state agree? HAProxy shows an up server's admin state in its
    /// status (UP only when READY, DRAIN, MAINT); a DOWN server may be READY or DRAIN.
    /// A disagreement means the state changed between the two reads.
    pub fn is_consistent(&self) -> bool {
        match self.status {
            OpStatus::Up => self.admin == AdminState::Ready,
            OpStatus::Drain => self.admin == AdminState::Drain,
            OpStatus::Maint => self.admin == AdminState::Maint,
            _ => true,
        }
    }
}

/// Why a runtime API answer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

/// One data row of `show stat`, cells by header name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatRow(HashMap<String, String>);

impl StatRow {
    /// A cell by header name; missing and empty read as "".
    pub fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or("")
    }

    /// A counter cell; missing or empty reads as 0.
    pub fn counter(&self, name: &str) -> Result<u64, ParseError> {
        let cell = self.get(name).trim();
        if cell.is_empty() {
            return Ok(0);
        }
        cell.parse()
            .map_err(|_| ParseError(format!("column {name} is {cell:?}, not a number")))
    }

    /// `pxname` (the backend) and `svname` (the server, or BACKEND / FRONTEND).
    pub fn names(&self) -> (&str, &str) {
        (self.get("pxname"), self.get("svname"))
    }
}

/// Parses a `show stat` answer: a `# ` header line then CSV rows (quoted cells allowed).
pub fn parse_show_stat(text: &str) -> Result<Vec<StatRow>, ParseError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| ParseError("empty answer to show stat".into()))?;
    let header = header.strip_prefix("# ").ok_or_else(|| {
        ParseError(format!(
            "show stat header does not start with '# ': {header:.80}"
        ))
    })?;
    let names = split_csv(header);
    if !names.iter().any(|n| n == "pxname") || !names.iter().any(|n| n == "svname") {
        return Err(ParseError("show stat header lacks pxname/svname".into()));
    }
    Ok(lines
        .map(|line| StatRow(names.iter().cloned().zip(split_csv(line)).collect()))
        .collect())
}

/// Builds a [`ServerStatus`] from its stat row and its admin state.
pub fn server_status(row: &StatRow, admin: AdminState) -> Result<ServerStatus, ParseError> {
    let (backend, server) = row.names();
    let detail = [row.get("check_desc"), row.get("last_chk")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    Ok(ServerStatus {
        backend: backend.to_string(),
        server: server.to_string(),
        status: OpStatus::parse(row.get("status")),
        admin,
        current_sessions: row.counter("scur")?,
        total_sessions: row.counter("stot")?,
        responses: [
            "hrsp_1xx",
            "hrsp_2xx",
            "hrsp_3xx",
            "hrsp_4xx",
            "hrsp_5xx",
            "hrsp_other",
        ]
        .iter()
        .map(|c| row.counter(c))
        .sum::<Result<u64, _>>()?,
        http_5xx: row.counter("hrsp_5xx")?,
        conn_errors: row.counter("econ")?,
        resp_errors: row.counter("eresp")?,
        response_time_ms: row.counter("rtime")?,
        weight: row.counter("weight")?,
        check_status: row.get("check_status").to_string(),
        check_detail: detail,
        check_health: row.counter("check_health")?,
        address: row.get("addr").to_string(),
    })
}

/// The rows of a `show servers state` answer (format version 1), each as a lookup of its
/// cells by column name; `columns` must all be in the header.
fn servers_state_rows<'a, const N: usize>(
    text: &'a str,
    columns: [&str; N],
) -> Result<Vec<[&'a str; N]>, ParseError> {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    match lines.next().map(str::trim) {
        Some("1") => {}
        other => {
            return Err(ParseError(format!(
                "show servers state format {other:?} is not version 1"
            )));
        }
    }
    let header = lines
        .next()
        .and_then(|h| h.strip_prefix('#'))
        .ok_or_else(|| ParseError("show servers state has no '#' header line".into()))?;
    let names: Vec<&str> = header.split_whitespace().collect();
    let mut at = [0; N];
    for (slot, name) in at.iter_mut().zip(columns) {
        *slot = names
            .iter()
            .position(|n| *n == name)
            .ok_or_else(|| ParseError(format!("show servers state lacks column {name}")))?;
    }
    lines
        .filter(|l| !l.starts_with('#'))
        .map(|line| {
            let cells: Vec<&str> = line.split_whitespace().collect();
            let mut row = [""; N];
            for (cell, i) in row.iter_mut().zip(at) {
                *cell = cells.get(i).copied().ok_or_else(|| {
                    ParseError(format!("show servers state row is short: {line:.80}"))
                })?;
            }
            Ok(row)
        })
        .collect()
}

/// Parses a `show servers state` answer (format version 1): returns
/// `(backend, server, admin state)` per server. Columns are found by header name.
pub fn parse_servers_state(text: &str) -> Result<Vec<(String, String, AdminState)>, ParseError> {
    servers_state_rows(text, ["be_name", "srv_name", "srv_admin_state"])?
        .into_iter()
        .map(|[be, srv, mask]| {
            let mask: u32 = mask
                .parse()
                .map_err(|_| ParseError(format!("srv_admin_state {mask:?} is not a number")))?;
            Ok((be.to_string(), srv.to_string(), AdminState::from_mask(mask)))
        })
        .collect()
}

/// Parses a `show servers state` answer (format version 1): returns
/// `(backend, server, address, port)` per server, as HAProxy sends traffic now.
pub fn parse_server_addrs(text: &str) -> Result<Vec<(String, String, String, u16)>, ParseError> {
    servers_state_rows(text, ["be_name", "srv_name", "srv_addr", "srv_port"])?
        .into_iter()
        .map(|[be, srv, addr, port]| {
            let port: u16 = port
                .parse()
                .map_err(|_| ParseError(format!("srv_port {port:?} is not a port")))?;
            Ok((be.to_string(), srv.to_string(), addr.to_string(), port))
        })
        .collect()
}

/// Splits one CSV line: commas delimit, `"` quotes a cell, `""` inside quotes is a quote.
fn split_csv(line: &str) -> Vec<String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cell.push('"');
                chars.next();
            }
            ('"', true) => quoted = false,
            ('"', false) if cell.is_empty() => quoted = true,
            (',', false) => cells.push(std::mem::take(&mut cell)),
            (c, _) => cell.push(c),
        }
    }
    cells.push(cell);
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured from HAProxy 2.6.12: `show stat web 6 -1` with host-1 drained, host-2 in
    /// maintenance, host-3 with nothing listening.
    const STAT_DRAIN_MAINT: &str = include_str!("fixtures/show_stat_drain_maint.txt");
    /// Captured from HAProxy 2.6.12 after 30 requests, right after host-2's app died.
    const STAT_GOING_DOWN: &str = include_str!("fixtures/show_stat_up_going_down.txt");
    /// Captured from HAProxy 2.6.12: `show servers state web`, same states as above.
    const STATE_DRAIN_MAINT: &str = include_str!("fixtures/show_servers_state_drain_maint.txt");

    fn statuses(text: &str) -> Vec<ServerStatus> {
        parse_show_stat(text)
            .unwrap()
            .iter()
            .filter(|r| r.names().1 != "BACKEND")
            .map(|r| server_status(r, AdminState::Ready).unwrap())
            .collect()
    }

    #[test]
    fn reads_status_columns_by_name_from_real_output() {
        let s = statuses(STAT_DRAIN_MAINT);
        let got: Vec<_> = s
            .iter()
            .map(|s| (s.server.as_str(), s.status.clone()))
            .collect();
        assert_eq!(
            got,
            [
                ("host-1", OpStatus::Drain),
                ("host-2", OpStatus::Maint),
                ("host-3", OpStatus::Down)
            ]
        );
        assert_eq!(s[0].backend, "web");
        assert_eq!(s[0].address, "127.0.0.2:18081");
        assert_eq!(s[0].check_status, "L7OK");
        assert_eq!(s[2].check_status, "L4CON");
        assert_eq!(
            s[2].check_detail,
            "Layer4 connection problem: Connection refused"
        );
    }

    #[test]
    fn reads_counters_and_transitional_status() {
        let s = statuses(STAT_GOING_DOWN);
        assert_eq!(s[1].status, OpStatus::Up, "`UP 1/2` is still in rotation");
        assert_eq!((s[0].total_sessions, s[0].current_sessions), (15, 0));
        assert_eq!(
            (s[0].http_5xx, s[0].conn_errors, s[0].resp_errors),
            (0, 0, 0)
        );
        assert_eq!(s[0].weight, 1);
    }

    #[test]
    fn backend_row_is_present_with_type_6() {
        let rows = parse_show_stat(STAT_DRAIN_MAINT).unwrap();
        assert!(rows.iter().any(|r| r.names() == ("web", "BACKEND")));
    }

    #[test]
    fn header_order_does_not_matter() {
        let text = "# svname,status,pxname,scur\nhost-9,UP,api,7\n";
        let rows = parse_show_stat(text).unwrap();
        assert_eq!(rows[0].names(), ("api", "host-9"));
        assert_eq!(rows[0].counter("scur").unwrap(), 7);
        assert_eq!(
            rows[0].counter("hrsp_5xx").unwrap(),
            0,
            "missing column reads 0"
        );
    }

    #[test]
    fn rejects_error_text_and_bad_numbers() {
        assert!(parse_show_stat("No such proxy.\n\n").is_err());
        assert!(parse_show_stat("").is_err());
        let rows = parse_show_stat("# pxname,svname,scur\nweb,a,x\n").unwrap();
        assert!(rows[0].counter("scur").is_err());
    }

    #[test]
    fn quoted_cells() {
        assert_eq!(
            split_csv(r#"a,"b,c","d""e",,"#),
            ["a", "b,c", "d\"e", "", ""]
        );
    }

    #[test]
    fn op_status_words() {
        assert_eq!(OpStatus::parse("DOWN 1/2"), OpStatus::Down);
        assert_eq!(OpStatus::parse("MAINT (via web/a)"), OpStatus::Maint);
        assert_eq!(OpStatus::parse("no check"), OpStatus::Up);
        assert_eq!(OpStatus::parse("NOLB"), OpStatus::NoLb);
        assert_eq!(OpStatus::parse("OPEN"), OpStatus::Other("OPEN".into()));
    }

    #[test]
    fn servers_state_admin_masks_from_real_output() {
        let got = parse_servers_state(STATE_DRAIN_MAINT).unwrap();
        let got: Vec<_> = got
            .iter()
            .map(|(b, s, a)| (b.as_str(), s.as_str(), *a))
            .collect();
        assert_eq!(
            got,
            [
                ("web", "host-1", AdminState::Drain),
                ("web", "host-2", AdminState::Maint),
                ("web", "host-3", AdminState::Ready)
            ]
        );
        assert_eq!(AdminState::from_mask(0x08 | 0x01), AdminState::Maint);
        assert!(parse_servers_state("Can't find backend.\n\n").is_err());
    }

    #[test]
    fn server_addresses_from_real_output() {
        let got = parse_server_addrs(STATE_DRAIN_MAINT).unwrap();
        assert_eq!(
            got[1],
            ("web".into(), "host-2".into(), "127.0.0.3".into(), 18081)
        );
        assert_eq!(got.len(), 3);
        assert!(parse_server_addrs("1\n# be_name srv_name\n").is_err());
    }

    #[test]
    fn in_rotation_needs_up_ready_and_weight() {
        let mut s = statuses(STAT_GOING_DOWN).remove(0);
        assert!(s.in_rotation());
        s.admin = AdminState::Drain;
        assert!(!s.in_rotation());
        s.admin = AdminState::Ready;
        s.weight = 0;
        assert!(!s.in_rotation());
    }

    #[test]
    fn torn_reads_are_inconsistent() {
        let mut s = statuses(STAT_DRAIN_MAINT);
        let admins = [AdminState::Drain, AdminState::Maint, AdminState::Drain];
        for (s, admin) in s.iter_mut().zip(admins) {
            s.admin = admin;
            assert!(s.is_consistent(), "{s:?}");
        }
        s[0].admin = AdminState::Ready;
        assert!(!s[0].is_consistent(), "DRAIN status with READY admin");
        let mut up = statuses(STAT_GOING_DOWN).remove(0);
        up.admin = AdminState::Drain;
        assert!(!up.is_consistent(), "UP status with DRAIN admin");
    }
}
