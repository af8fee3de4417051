//! A real browser for the web interface's end-to-end tests: Debian's headless Chromium
//! driven through WebDriver ([`fantoccini`]) by a `chromedriver` of its own
//! ([`driver::Chromedriver`]), plus a raw HTTP client ([`WebClient`]) for the requests a
//! browser would not send by itself.
//!
//! The helpers wait on conditions with deadlines (never on sleeps): an element, an
//! attribute's value, a script's answer. Elements are named by CSS selectors and read
//! through `document.querySelector` at each call, so a live update replacing an element
//! never leaves a stale handle behind. [`Browser::screenshot`] saves the page as PNG
//! under `target/screenshots/` for a person to look at.
//!
//! The controller's certificate comes from the fleet's private CA: the session accepts
//! it without that CA (`acceptInsecureCerts`), which is allowed only for loopback URLs.
//! The raw client does verify it, against the fleet CA.
//!
//! Dropping a [`Browser`] (also on panic) kills chromedriver and every Chromium process
//! it started; [`Browser::close`] ends the WebDriver session first, politely.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

mod driver;
mod raw;

pub use driver::{Chromedriver, find_program};
pub use raw::{WebClient, WebConnection, WebResponse, WebSession, csrf_in};

/// How long a wait of the helpers takes at most unless told otherwise.
pub const WAIT: Duration = Duration::from_secs(30);
/// Chromium's window: wide enough for the host grid and the overview matrix.
const WINDOW: (u32, u32) = (1400, 1000);
/// Loads of a page aborted by a network change before [`Browser::goto`] gives up.
const NAVIGATION_TRIES: usize = 4;
/// The tallest full-page screenshot.
const MAX_SCREENSHOT_HEIGHT: u32 = 4000;

/// Headless Chromium on a page of the web interface.
pub struct Browser {
    /// The WebDriver session.
    client: Client,
    /// `https://127.0.0.1:PORT`, the web interface every path is relative to.
    base: String,
    /// chromedriver and the Chromium it started; killed on drop, after the session.
    driver: Chromedriver,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session for the web interface at
    /// `base` (`https://127.0.0.1:PORT`, loopback only).
    pub async fn start(base: &str) -> Self {
        let host = base
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split(':').next())
            .unwrap_or_default();
        assert!(
            host == "127.0.0.1" || host == "localhost",
            "the browser only visits loopback (certificates are not checked): {base}"
        );
        let driver = Chromedriver::start().await;
        let chromium = find_program("chromium").unwrap_or_else(|| {
            panic!("chromium is missing: run tests/setup.sh (it installs Debian's chromium)")
        });
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--no-first-run".into(),
            "--disable-extensions".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={},{}", WINDOW.0, WINDOW.1),
            format!("--user-data-dir={}", driver.profile_dir().display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            // A confirmation dialog (abort?) is answered yes, as the person clicking meant.
            "unhandledPromptBehavior": "accept",
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": args,
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("a JSON object")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&driver.url())
            .await
            .unwrap_or_else(|e| panic!("no WebDriver session: {e}\n{}", driver.log()));
        Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            driver,
        }
    }

    /// The web interface's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebDriver session, for what the helpers do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Ends the WebDriver session (Chromium closes), then chromedriver.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    // ----- navigation -----------------------------------------------------------------

    /// Opens `path` (`/hosts?page=2`) of the web interface and waits for the load.
    /// Chromium aborts a load when the machine's network changes (Docker adding or
    /// removing a container's interface: `ERR_NETWORK_CHANGED`); such a load is tried
    /// again, as a person would reload, a few times.
    pub async fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        for attempt in 1..=NAVIGATION_TRIES {
            self.client
                .goto(&url)
                .await
                .unwrap_or_else(|e| self.fail(&format!("open {url}"), e));
            if !self.network_error().await {
                return;
            }
            eprintln!("browser: loading {url} was interrupted (attempt {attempt}): reloading");
        }
        self.fail_msg(&format!(
            "loading {url} failed {NAVIGATION_TRIES} times with a network error"
        ));
    }

    /// Whether Chromium shows its own network error page (the load was aborted, e.g.
    /// `ERR_NETWORK_CHANGED` when Docker changed the machine's interfaces).
    pub async fn network_error(&self) -> bool {
        let v = self
            .client
            .execute(
                "return !!document.body && document.body.classList.contains('neterror')",
                vec![],
            )
            .await;
        v.is_ok_and(|v| truthy(&v))
    }

    /// Opens (GET) the page whose load Chromium's network error page reports again;
    /// false (nothing done) when that address is a form's POST action.
    async fn reopen_after_network_error(&self) -> bool {
        // The error page's own reload button names the address that failed.
        let url = self
            .client
            .execute(
                "const b = document.querySelector('#reload-button'); return (b && b.dataset.url) || location.href",
                vec![],
            )
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .filter(|u| u.starts_with(&self.base));
        let Some(url) = url else { return false };
        if is_post_action(&url[self.base.len()..]) {
            return false;
        }
        eprintln!("browser: loading {url} was interrupted: opening it again");
        let _ = self.client.goto(&url).await;
        true
    }

    /// The path and query of the page shown (`/deployments/d-1`).
    pub async fn path(&self) -> String {
        let url = self
            .client
            .current_url()
            .await
            .unwrap_or_else(|e| self.fail("read the URL", e));
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Waits until the page shown is `path` (query ignored) and its `main[data-page]`
    /// is there.
    pub async fn wait_path(&self, path: &str, timeout: Duration) {
        let check = || async {
            let now = self.path().await;
            let bare = now.split('?').next().unwrap_or_default().to_string();
            if bare == path && self.exists("main[data-page]").await {
                Ok(())
            } else {
                Err(now)
            }
        };
        if let Err(now) = crate::poll(timeout, check).await {
            self.fail_msg(&format!(
                "the page {path} did not show within {timeout:?}; on {now}"
            ));
        }
    }

    /// Signs in on `/sign-in` with an API token, as a person would (type it, press the
    /// button), and waits until a page of the interface shows.
    pub async fn sign_in(&self, token: &str) {
        self.goto("/sign-in").await;
        self.wait_for("form#sign-in input[name=token]", WAIT).await;
        self.fill("form#sign-in input[name=token]", token).await;
        self.submit("form#sign-in").await;
        self.wait_js(
            "a page of the interface after signing in",
            WAIT,
            "return !!document.querySelector('main[data-page]') && !document.querySelector('form#sign-in')",
            vec![],
        )
        .await;
    }

    /// Presses `button#sign-out` and waits for the sign-in form.
    pub async fn sign_out(&self) {
        self.click("button#sign-out").await;
        self.wait_for("form#sign-in", WAIT).await;
    }

    // ----- reading the page -----------------------------------------------------------

    /// Runs `script` (a function body: `return ...`) in the page with `args`.
    pub async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| self.fail(&format!("run {script}"), e))
    }

    /// Whether an element matches `selector`.
    pub async fn exists(&self, selector: &str) -> bool {
        self.count(selector).await > 0
    }

    /// How many elements match `selector`.
    pub async fn count(&self, selector: &str) -> usize {
        let n = self
            .js(
                "return document.querySelectorAll(arguments[0]).length",
                vec![json!(selector)],
            )
            .await;
        n.as_u64().unwrap_or(0) as usize
    }

    /// Attribute `name` of the first element matching `selector` (`None`: no such
    /// element or attribute).
    pub async fn attr(&self, selector: &str, name: &str) -> Option<String> {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.getAttribute(arguments[1]) : null",
                vec![json!(selector), json!(name)],
            )
            .await;
        v.as_str().map(str::to_string)
    }

    /// Attribute `name` of every element matching `selector`, in document order.
    pub async fn attrs(&self, selector: &str, name: &str) -> Vec<String> {
        let v = self
            .js(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.getAttribute(arguments[1]) || '')",
                vec![json!(selector), json!(name)],
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The visible text of the first element matching `selector` (empty: none).
    pub async fn text(&self, selector: &str) -> String {
        let v = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''",
                vec![json!(selector)],
            )
            .await;
        v.as_str().unwrap_or_default().to_string()
    }

    /// The session's CSRF token (`meta[name=csrf]`).
    pub async fn csrf(&self) -> String {
        self.attr("meta[name=csrf]", "content")
            .await
            .unwrap_or_else(|| self.fail_msg("no meta[name=csrf] on the page"))
    }

    /// Every cookie of the session (HttpOnly ones included) as a `Cookie` header value.
    pub async fn cookie_header(&self) -> String {
        let cookies = self
            .client
            .get_all_cookies()
            .await
            .unwrap_or_else(|e| self.fail("read the cookies", e));
        cookies
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    // ----- waiting --------------------------------------------------------------------

    /// Waits until an element matches `selector`.
    pub async fn wait_for(&self, selector: &str, timeout: Duration) {
        self.wait_js(
            &format!("an element {selector}"),
            timeout,
            "return !!document.querySelector(arguments[0])",
            vec![json!(selector)],
        )
        .await;
    }

    /// Waits until no element matches `selector`.
    pub async fn wait_gone(&self, selector: &str, timeout: Duration) {
        self.wait_js(
            &format!("no element {selector}"),
            timeout,
            "return !document.querySelector(arguments[0])",
            vec![json!(selector)],
        )
        .await;
    }

    /// Waits until attribute `name` of the first element matching `selector` is
    /// `value`.
    pub async fn wait_attr(&self, selector: &str, name: &str, value: &str, timeout: Duration) {
        let check = || async {
            match self.attr(selector, name).await {
                Some(v) if v == value => Ok(()),
                other => Err(format!("{other:?}")),
            }
        };
        if let Err(last) = crate::poll(timeout, check).await {
            let on = self.describe_page().await;
            self.fail_msg(&format!(
                "{selector} [{name}] did not become {value:?} within {timeout:?}; last {last}; {on}"
            ));
        }
    }

    /// Waits until `script` (a function body) returns a truthy value in the page;
    /// returns that value. Panics naming `what` after `timeout`.
    pub async fn wait_js(
        &self,
        what: &str,
        timeout: Duration,
        script: &str,
        args: Vec<Value>,
    ) -> Value {
        let check = || async {
            // A page load (a redirect after a form, a sign-out) aborted by a network
            // change: open the same page again, as a person would. An aborted form POST
            // is left to the caller (it knows whether the action may be repeated).
            if self.network_error().await && self.reopen_after_network_error().await {
                return Err("Chromium's network error page: opened the page again".into());
            }
            match self.client.execute(script, args.clone()).await {
                Ok(v) if truthy(&v) => Ok(v),
                Ok(v) => Err(v.to_string()),
                // A navigation in progress fails the script: try again.
                Err(e) => Err(e.to_string()),
            }
        };
        match crate::poll(timeout, check).await {
            Ok(v) => v,
            Err(last) => {
                let on = self.describe_page().await;
                self.fail_msg(&format!(
                    "timed out after {timeout:?} waiting for {what}; last: {last}; {on}"
                ))
            }
        }
    }

    // ----- acting ---------------------------------------------------------------------

    /// Clicks the first element matching `selector` (a real WebDriver click). A live
    /// update may replace the element between finding and clicking it: then it is
    /// found again and clicked, as a person would click again, until [`WAIT`].
    pub async fn click(&self, selector: &str) {
        let click = || async {
            let e = self
                .client
                .find(Locator::Css(selector))
                .await
                .map_err(|e| e.to_string())?;
            e.click().await.map_err(|e| e.to_string())
        };
        if let Err(last) = crate::poll(WAIT, click).await {
            self.fail_msg(&format!("click {selector}: {last}"));
        }
    }

    /// Replaces the value of the input matching `selector` by typing `value`.
    pub async fn fill(&self, selector: &str, value: &str) {
        let e = self.find(selector).await;
        e.clear()
            .await
            .unwrap_or_else(|err| self.fail(&format!("clear {selector}"), err));
        e.send_keys(value)
            .await
            .unwrap_or_else(|err| self.fail(&format!("type into {selector}"), err));
    }

    /// Picks the option with `value` in the select matching `selector`.
    pub async fn select(&self, selector: &str, value: &str) {
        self.find(selector)
            .await
            .select_by_value(value)
            .await
            .unwrap_or_else(|e| self.fail(&format!("select {value} in {selector}"), e));
    }

    /// Presses the submit button of the form matching `form` (the form's own submit
    /// when it has none).
    pub async fn submit(&self, form: &str) {
        let button = format!(
            "{form} button[type=submit], {form} input[type=submit], {form} button:not([type])"
        );
        if self.exists(&button).await {
            self.click(&button).await;
        } else {
            self.js(
                "document.querySelector(arguments[0]).requestSubmit()",
                vec![json!(form)],
            )
            .await;
        }
    }

    async fn find(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .find(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| self.fail(&format!("find {selector}"), e))
    }

    // ----- recording ------------------------------------------------------------------

    /// Saves the page as `target/screenshots/<name>.png` (the whole page, up to
    /// 4,000 px tall); returns the path.
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // The window's height is the page's plus the browser's own frame (the window
        // is taller than its viewport).
        let height = self
            .js(
                "return Math.max(document.documentElement.scrollHeight, document.body ? document.body.scrollHeight : 0) + Math.max(0, window.outerHeight - window.innerHeight)",
                vec![],
            )
            .await
            .as_u64()
            .unwrap_or(WINDOW.1 as u64) as u32;
        let tall = height.clamp(WINDOW.1, MAX_SCREENSHOT_HEIGHT);
        if tall != WINDOW.1 {
            let _ = self.client.set_window_size(WINDOW.0, tall).await;
        }
        let png = self.client.screenshot().await;
        if tall != WINDOW.1 {
            let _ = self.client.set_window_size(WINDOW.0, WINDOW.1).await;
        }
        let png = png.unwrap_or_else(|e| self.fail(&format!("screenshot {name}"), e));
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// Records, from now on and until the page is left, every change of attribute
    /// `name` on elements matching `selector` (inside the whole document): see
    /// [`Browser::changes`]. A reload or navigation drops the recorder, which
    /// [`Browser::still_recording`] tells.
    pub async fn record_changes(&self, selector: &str, name: &str) {
        self.js(
            r#"
            const [selector, name] = arguments;
            window.__droverChanges = [];
            const seen = (el) => {
                if (el.nodeType === 1 && el.matches(selector)) {
                    window.__droverChanges.push({
                        key: el.getAttribute('data-host') || el.id || '',
                        value: el.getAttribute(name),
                        at_ms: performance.timeOrigin + performance.now(),
                    });
                }
            };
            const observer = new MutationObserver((records) => {
                for (const r of records) {
                    if (r.type === 'attributes') seen(r.target);
                    for (const n of r.addedNodes || []) {
                        seen(n);
                        if (n.querySelectorAll) n.querySelectorAll(selector).forEach(seen);
                    }
                }
            });
            observer.observe(document.documentElement, {
                subtree: true, childList: true, attributes: true, attributeFilter: [name],
            });
            window.__droverRecorder = observer;
            "#,
            vec![json!(selector), json!(name)],
        )
        .await;
    }

    /// The changes recorded since [`Browser::record_changes`]: `(key, value, at_ms)`
    /// with the element's `data-host` (else its id) as key and Unix ms with a fraction.
    pub async fn changes(&self) -> Vec<(String, String, f64)> {
        let v = self.js("return window.__droverChanges || []", vec![]).await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["key"].as_str().unwrap_or_default().to_string(),
                            c["value"].as_str().unwrap_or_default().to_string(),
                            c["at_ms"].as_f64().unwrap_or_default(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether the recorder of [`Browser::record_changes`] is still installed: the
    /// page was not reloaded nor left since.
    pub async fn still_recording(&self) -> bool {
        truthy(&self.js("return !!window.__droverRecorder", vec![]).await)
    }

    // ----- failing --------------------------------------------------------------------

    /// For a failure message: the page's path, a screenshot of it (`failed-<time>.png`)
    /// and the start of its `main` element.
    async fn describe_page(&self) -> String {
        let path = self.path().await;
        let shot = self
            .screenshot(&format!("failed-{}", crate::fleet::now_ms()))
            .await;
        let main = self
            .client
            .execute(
                "const m = document.querySelector('main') || document.body; return m ? m.outerHTML.slice(0, 3000) : ''",
                vec![],
            )
            .await
            .map(|v| v.as_str().unwrap_or_default().to_string())
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        format!("on {path}, screenshot {}; the page: {main}", shot.display())
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> ! {
        self.fail_msg(&format!("{what}: {e}"))
    }

    fn fail_msg(&self, msg: &str) -> ! {
        panic!("browser: {msg}\n{}", self.driver.log())
    }
}

/// Whether `path` is where one of the web interface's forms POSTs (an action, a deploy,
/// a rollback, the sign-out), not a page to open: `/deployments/{id}/{action}`,
/// `/releases/{id}/deploy`, `/services/{service}/rollback`, `/sign-out`.
fn is_post_action(path: &str) -> bool {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    matches!(
        parts.as_slice(),
        ["deployments", _, action] if *action != "events"
    ) || matches!(
        parts.as_slice(),
        ["releases", _, "deploy"] | ["services", _, "rollback"] | ["sign-out"]
    )
}

/// `target/screenshots`, where [`Browser::screenshot`] saves.
pub fn screenshot_dir() -> PathBuf {
    crate::target_dir().join("screenshots")
}

/// JavaScript's truthiness of a value returned by a script.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::is_post_action;

    #[test]
    fn form_actions_are_told_from_pages() {
        for post in [
            "/deployments/d-1/promote",
            "/releases/r-1/deploy",
            "/services/web/rollback",
            "/sign-out",
        ] {
            assert!(is_post_action(post), "{post}");
        }
        for page in [
            "/",
            "/sign-in",
            "/deployments/d-1",
            "/history/diff?a=1&b=2",
            "/hosts",
        ] {
            assert!(!is_post_action(page), "{page}");
        }
    }
}
