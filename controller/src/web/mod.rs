//! The web interface of `drover serve`: server-rendered pages over HTTPS on their own
//! listener (`--web-listen`), a client of the same operator model as the CLI. Every
//! action goes through the operator service's handlers with the signed-in token's
//! [`Principal`](crate::auth::Principal), after the same role check
//! ([`crate::auth::requirement`]), so roles, gates and history are exactly the CLI's.
//!
//! # DOM contract (stable: the browser tests rely on it)
//!
//! URLs:
//! - `GET /sign-in`, `POST /sign-in` (form field `token`), `POST /sign-out`
//! - `GET /` overview, `GET /hosts?label=k%3Dv&page=N`, `GET /deployments/{id}`,
//!   `GET /deployments/{id}/events` (server-sent events), `GET /releases?service=S`,
//!   `GET /history?service=&environment=&outcome=`, `GET /history/diff?a=ID&b=ID`,
//!   `GET /schedules`, `GET /delivery`
//! - `POST /deployments/{id}/{promote|pause|resume|abort|cancel|approve|redeploy}`,
//!   `POST /releases/{id}/deploy`, `POST /services/{service}/rollback`; each answers
//!   `303 See Other` to `/deployments/{id}` of the deployment it acted on or started.
//!   A signed-out request is sent to `/sign-in` (`303`); a POST without a valid CSRF
//!   token is refused with `403`; a POST by a role too low for it is refused with `403`.
//!
//! Elements:
//! - sign-in form `form#sign-in` with `input[name=token]`; sign-out `button#sign-out`
//!   (in the header of every page once signed in)
//! - each page's root `main[data-page=overview|hosts|deployment|releases|history|schedules|delivery]`
//! - the connection banner `#conn[data-state=live|lost]` (on every page; "connection
//!   lost, reconnecting" while lost)
//! - the equivalent CLI command of each page in `code.cli`
//! - deployment page: `#deployment[data-state=...]` (states as the CLI prints them:
//!   pending, preparing, rolling, rolling_back, paused, succeeded, failed, rolled_back,
//!   scheduled, baking, awaiting_promotion, cancelled, skipped, held, awaiting_approval),
//!   one cell per host `[data-host=NAME][data-phase=...]` (phases as the CLI prints
//!   them: pending, prepared, draining, swapping, enabling, done, failed, rolling_back,
//!   rolled_back, left_drained), updated in place by live updates without a reload
//! - action buttons `button[data-action=promote|pause|resume|abort|rollback|deploy|approve|redeploy|cancel]`,
//!   shown only to a role that may use them; an action that the state does not allow
//!   is shown disabled with its reason in an element `[data-reason]` next to it
//! - the deploy form on the releases page `form[data-deploy]` (one per release) with
//!   `select[name=environment]` and the confirmation `input[name=confirm]` (required,
//!   the environment's name typed, for an environment with an approval gate or a
//!   `production` label; ignored otherwise)
//! - the CSRF token in `input[name=csrf]` of every form and in `meta[name=csrf]`
//! - after a deploy is started the browser lands on `/deployments/{id}`
//! - errors of an action are shown on the page it was sent from in `#error` (the
//!   operator API's message, e.g. a gate that holds the deploy)
