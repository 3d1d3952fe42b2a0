//! The admin console, for real: headless Chromium (through chromedriver's
//! WebDriver API) loads it against a running dtx with access control on,
//! clicks list → detail → retry now, and the test asserts what the page
//! shows. A screenshot is kept under target/.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{
    free_port, gid, prefix, saga_body, test_settings, Branches, RedisServer, Reply, TestApp,
};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A chromedriver process and one headless Chromium session.
struct Browser {
    driver: Child,
    base: String,
    http: reqwest::Client,
    profile: std::path::PathBuf,
}

impl Browser {
    async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the console test needs chromedriver and chromium (apt-get install chromium chromium-driver)");
        let http = reqwest::Client::new();
        let root = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while http.get(format!("{root}/status")).send().await.is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = std::env::temp_dir().join(format!("dtx-chromium-{}", fastrand::u64(..)));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        }}});
        let r: Value = http
            .post(format!("{root}/session"))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let session = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"))
            .to_owned();
        Self {
            driver,
            base: format!("{root}/session/{session}"),
            http,
            profile,
        }
    }

    async fn cmd(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.base));
        if method != reqwest::Method::GET {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        r.json::<Value>().await.unwrap()["value"].take()
    }

    async fn go(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", json!({"url": url}))
            .await;
    }

    async fn find_all(&self, css: &str) -> Vec<String> {
        let v = self
            .cmd(
                reqwest::Method::POST,
                "/elements",
                json!({"using": "css selector", "value": css}),
            )
            .await;
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e[ELEMENT].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits for `css` to match, and returns the first match.
    async fn wait_for(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                return e;
            }
            assert!(Instant::now() < deadline, "{css} never appeared");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn text(&self, element: &str) -> String {
        let v = self
            .cmd(
                reqwest::Method::GET,
                &format!("/element/{element}/text"),
                Value::Null,
            )
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until the text of `css` is `want`.
    async fn wait_text(&self, css: &str, want: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = String::new();
        while Instant::now() < deadline {
            if let Some(e) = self.find_all(css).await.into_iter().next() {
                last = self.text(&e).await;
                if last == want {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{css} shows {last:?}, not {want:?}");
    }

    async fn click(&self, element: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/click"),
            json!({}),
        )
        .await;
    }

    async fn type_into(&self, element: &str, text: &str) {
        self.cmd(
            reqwest::Method::POST,
            &format!("/element/{element}/value"),
            json!({"text": text}),
        )
        .await;
    }

    /// Ends the session (and its browser).
    async fn quit(&self) {
        let _ = self.http.delete(&self.base).send().await;
    }

    async fn screenshot(&self, path: &std::path::Path) {
        use base64::Engine as _;
        let v = self
            .cmd(reqwest::Method::GET, "/screenshot", Value::Null)
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // chromedriver does not take its browser down when killed: end every
        // process started with this test's profile too
        let _ = Command::new("pkill")
            .arg("-f")
            .arg(self.profile.display().to_string())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

#[tokio::test]
async fn console_lists_shows_detail_and_retries_now() {
    let redis = RedisServer::start();
    let mut settings = test_settings(&redis.url(), &prefix());
    settings.auth.tokens = "console-secret".into();
    let app = TestApp::spawn_with(settings).await;
    let b = Branches::start().await;
    let auth = |r: reqwest::RequestBuilder| r.bearer_auth("console-secret");
    // one finished saga, and one waiting a minute for its retry
    let done = gid("console-done");
    let mut body = saga_body(&done, &b);
    body["wait_result"] = json!(true);
    auth(app.http.post(format!("{}/submit", app.base)))
        .json(&body)
        .send()
        .await
        .unwrap();
    b.script("a1", &[Reply::Raw(503, "warehouse offline".into())]);
    let stuck = gid("console-stuck");
    let mut body = saga_body(&stuck, &b);
    body["retry_interval"] = json!(60);
    auth(app.http.post(format!("{}/submit", app.base)))
        .json(&body)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let browser = Browser::start().await;
    let root = app.root();
    browser.go(&format!("{root}/admin/")).await;
    // the console asks for the token and keeps it in the tab
    let token = browser.wait_for("#login #token").await;
    browser.type_into(&token, "console-secret").await;
    browser.click(&browser.wait_for("#save-token").await).await;
    // the list shows both, newest first
    browser.wait_for(&format!("tr[data-gid='{stuck}']")).await;
    let rows = browser.find_all("#trans-table tr").await;
    assert_eq!(rows.len(), 2);
    let first = browser.text(&rows[0]).await;
    assert!(
        first.contains(&stuck),
        "{first:?} / {:?}",
        browser.text(&rows[1]).await
    );
    assert!(browser.text(&rows[1]).await.contains("succeed"));
    // detail of the stuck one: its failing branch, attempts and last error
    browser
        .click(
            &browser
                .wait_for(&format!("tr[data-gid='{stuck}'] a.gid-link"))
                .await,
        )
        .await;
    browser.wait_text("#detail-status", "submitted").await;
    let failing = browser
        .wait_for("#branches tr[data-branch='01:action']")
        .await;
    let text = browser.text(&failing).await;
    assert!(
        text.contains("prepared") && text.contains("warehouse offline"),
        "{text}"
    );
    let shot = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-detail.png");
    browser.screenshot(&shot).await;
    // retry now: the branch answers this time and the page shows the end
    browser.click(&browser.wait_for("#retry-now").await).await;
    browser.wait_text("#action-result", "retry now: done").await;
    browser.wait_text("#detail-status", "succeed").await;
    assert_eq!(b.paths_for(&stuck), ["a1", "a1", "a2"]);
    let shot2 =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-after-retry.png");
    browser.screenshot(&shot2).await;
    println!(
        "console screenshots: {} {}",
        shot.display(),
        shot2.display()
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    browser.quit().await;
}
