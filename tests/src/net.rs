//! Loopback addresses for tests: each test publishes on its own 127.0.0.N so that
//! parallel tests never fight over a port, and free ports on it.

use std::net::{Ipv4Addr, TcpListener};

/// A random loopback host address, 127.0.0.N with N in 2..250 (127.0.0.1 stays for
/// the registry and controller). Linux routes all of 127.0.0.0/8 to `lo`.
pub fn loopback_host() -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, rand::random_range(2..250))
}

/// A port that is free on `ip` right now (bound to port 0, read back, released).
/// Another process may take it before the caller binds it; callers that can keep the
/// listener should bind port 0 themselves instead.
pub fn free_port(ip: Ipv4Addr) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("cannot bind a free port on {ip}: {e}"))
        .port()
}
