//! A `synchost run` daemon with its admin endpoint on a free loopback port,
//! and an HTTP client for its API.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{BIN, HostDir, KillOnDrop};

/// Waits for `done`, polling, for at most `limit`; panics naming `what`.
pub fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running daemon and where its API answers.
pub struct Daemon {
    pub process: KillOnDrop,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub url: String,
    pub token: String,
    log: std::path::PathBuf,
}

impl Daemon {
    /// Starts `synchost run` on `host` (whose synchost.toml must have an
    /// `[admin] bind`, as [`super::host_config`] writes), logging to
    /// `daemon.log`, and waits for its endpoint.
    pub fn start(host: &HostDir) -> Daemon {
        let log = host.path("daemon.log");
        let url_file = host.path("state/admin.url");
        let _ = std::fs::remove_file(&url_file);
        let process = KillOnDrop(
            Command::new(BIN)
                .arg("--config")
                .arg(host.path("synchost.toml"))
                .arg("run")
                .env("SYNCHOST_LOG", "info")
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .unwrap(),
        );
        let mut daemon = Daemon { process, url: String::new(), token: String::new(), log };
        wait_for("the daemon's admin endpoint (state/admin.url)", Duration::from_secs(120), || {
            if let Some(exit) = daemon.process.try_wait().unwrap() {
                panic!("the daemon exited ({exit}) before listening:\n{}", daemon.log());
            }
            std::fs::read_to_string(&url_file).is_ok_and(|url| url.ends_with('\n'))
        });
        daemon.url = std::fs::read_to_string(&url_file).unwrap().trim().trim_end_matches('/').to_string();
        daemon.token = std::fs::read_to_string(host.path("state/admin.token")).unwrap().trim().to_string();
        daemon
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `GET path` with the token: (status, JSON body).
    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        self.call("GET", path, None, Some(&self.token))
    }

    /// `POST path` with the token and a JSON body: (status, JSON body).
    pub fn post(&self, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        self.call("POST", path, body, Some(&self.token))
    }

    /// `GET path` with the token, as text (for /metrics).
    pub fn get_text(&self, path: &str) -> (u16, String) {
        self.raw("GET", path, None, Some(&self.token))
    }

    /// Any request, with the token given (or none).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        token: Option<&str>,
    ) -> (u16, serde_json::Value) {
        let (status, text) = self.raw(method, path, body, token);
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} answered {status} with no JSON ({e}): {text}"));
        (status, json)
    }

    fn raw(&self, method: &str, path: &str, body: Option<serde_json::Value>, token: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let request = request.header("content-type", "application/json").body(body).unwrap();
        let mut response = agent.run(request).unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let status = response.status().as_u16();
        (status, response.body_mut().read_to_string().unwrap())
    }

    /// The pipeline's status from the API.
    pub fn pipeline(&self, pipeline: &str) -> serde_json::Value {
        let (tenant, name) = pipeline.split_once('/').unwrap();
        let (status, body) = self.get(&format!("/api/v1/tenants/{tenant}/pipelines/{name}"));
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the pipeline's last run is not `exclude` and has ended
    /// (any status but running), and returns it.
    pub fn wait_for_run_after(&self, pipeline: &str, exclude: Option<i64>) -> serde_json::Value {
        let mut last = serde_json::Value::Null;
        wait_for(&format!("a finished run of {pipeline} after {exclude:?}"), Duration::from_secs(180), || {
            let status = self.pipeline(pipeline);
            last = status["last_run"].clone();
            status["running"].is_null()
                && last["id"].as_i64().is_some_and(|id| Some(id) != exclude)
                && last["status"] != "running"
        });
        last
    }
}
