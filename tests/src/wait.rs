//! Waiting on conditions with a deadline: the only way tests synchronise with processes,
//! containers and streams they do not control.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(50);

/// Polls `check` until it yields `Ok`, for at most `timeout`; returns the last `Err`
/// when the time ran out.
pub async fn poll<T, E, F, Fut>(timeout: Duration, mut check: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// Polls `check` until it yields `Ok`, and returns that value. Panics naming `what`
/// and the last `Err` seen after `timeout`.
pub async fn wait_for<T, E, F, Fut>(timeout: Duration, what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Display,
{
    poll(timeout, check).await.unwrap_or_else(|last| {
        panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
    })
}

/// Polls `condition` until it holds; panics naming `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let check = || {
        let fut = condition();
        async move {
            if fut.await {
                Ok(())
            } else {
                Err("condition false")
            }
        }
    };
    wait_for(timeout, what, check).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn returns_once_the_condition_holds() {
        let n = AtomicU32::new(0);
        wait_until(Duration::from_secs(1), "three polls", || async {
            n.fetch_add(1, Ordering::SeqCst) == 2
        })
        .await;
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    #[should_panic(expected = "timed out after 1s waiting for the impossible; last seen: no")]
    async fn panics_with_the_last_value_after_the_deadline() {
        wait_for(Duration::from_secs(1), "the impossible", || async {
            Err::<(), _>("no")
        })
        .await;
    }
}
