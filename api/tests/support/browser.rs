//! A real headless Chromium for the console tests, driven over WebDriver
//! (`fantoccini`): `chromedriver` is started on a free port for each test
//! and killed, with the browser it started, when the [`Browser`] is
//! dropped, passed or failed.
//!
//! Waits poll with a deadline; nothing sleeps to synchronise.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

/// How long a wait for the page lasts before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// `chromedriver` and the processes it started (its process group).
struct Driver {
    child: Child,
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The whole group: chromedriver and the Chromium it started.
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Browser {
    client: Client,
    base: String,
    _driver: Driver,
}

/// `chromedriver` on `PATH`, if there is one.
fn find_chromedriver() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromedriver"))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// A browser for the console at `base`; `None` (the test skips, saying
    /// so) when chromedriver is missing and `CI` is unset. Under CI a
    /// missing chromedriver fails the test.
    pub async fn start(base: &str) -> Option<Self> {
        let Some(chromedriver) = find_chromedriver() else {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "chromedriver is not installed, and CI is set: the browser tests must run \
                     (`.ci/run` installs Debian's chromium and chromium-driver)"
                );
            }
            // Straight to stderr, not `eprintln!`: the harness captures
            // that for a passing test, and a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: chromedriver is not installed (apt-get install chromium \
                 chromium-driver); the console's browser tests did not run"
            );
            return None;
        };
        let port = testkit::free_port();
        let mut command = Command::new(chromedriver);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let driver = Driver {
            child: command.spawn().expect("start chromedriver"),
        };
        let url = format!("http://127.0.0.1:{port}");
        let mut options = vec![
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1280,1100",
        ];
        // Screenshots of the same width whatever the machine's settings.
        options.push("--force-device-scale-factor=1");
        let mut chrome = json!({ "args": options });
        if Path::new("/usr/bin/chromium").is_file() {
            chrome["binary"] = json!("/usr/bin/chromium");
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), chrome);
        let deadline = Instant::now() + WAIT;
        let client = loop {
            let attempt = ClientBuilder::new(HttpConnector::new())
                .capabilities(capabilities.clone())
                .connect(&url)
                .await;
            match attempt {
                Ok(client) => break client,
                // chromedriver is still starting.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("no WebDriver session from chromedriver: {err}"),
            }
        };
        Some(Self {
            client,
            base: base.to_owned(),
            _driver: driver,
        })
    }

    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    /// Polls until `check` answers `Some`, or fails the test saying `what`
    /// (with the page's text).
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if Instant::now() > deadline {
                let page = match self.client.find(Locator::Css("body")).await {
                    Ok(body) => body.text().await.unwrap_or_default(),
                    Err(_) => String::new(),
                };
                panic!("timed out waiting for {what}; the page says:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until an element matches `css`.
    pub async fn wait_for(&self, css: &str) {
        self.until(&format!("an element {css}"), || async {
            self.client.find(Locator::Css(css)).await.ok().map(|_| ())
        })
        .await
    }

    /// Waits until the first element matching `css` contains `text`.
    pub async fn wait_text(&self, css: &str, text: &str) {
        self.until(&format!("{css} saying {text:?}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            let shown = element.text().await.ok()?;
            shown.contains(text).then_some(())
        })
        .await
    }

    /// The text of the first element matching `css` (waiting for one).
    pub async fn text(&self, css: &str) -> String {
        self.until(&format!("the text of {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.text().await.ok()
        })
        .await
    }

    /// The attribute `name` of the first element matching `css` (waiting
    /// for one that has it).
    pub async fn attr(&self, css: &str, name: &str) -> String {
        self.until(&format!("{name} of {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.attr(name).await.ok().flatten()
        })
        .await
    }

    /// Clicks the element matching `css`; again if the live refresh
    /// replaced it between finding and clicking.
    pub async fn click(&self, css: &str) {
        self.until(&format!("a click on {css}"), || async {
            let element = self.client.find(Locator::Css(css)).await.ok()?;
            element.click().await.ok()
        })
        .await
    }

    /// Types the key into the sign-in form and sends it.
    pub async fn sign_in(&self, key: &str) {
        self.until("the sign-in form", || async {
            let field = self.client.find(Locator::Id("key")).await.ok()?;
            field.send_keys(key).await.ok()
        })
        .await;
        self.click(r#"form[action="/console/sign-in"] button[type="submit"]"#)
            .await;
    }

    /// Marks the page in its JavaScript state: [`Self::same_page`] is true
    /// until the page is reloaded or left.
    pub async fn mark_page(&self) {
        self.client
            .execute(
                "window.consoleTestMark = 'still here'; return true;",
                vec![],
            )
            .await
            .expect("mark the page");
    }

    pub async fn same_page(&self) -> bool {
        self.client
            .execute("return window.consoleTestMark === 'still here';", vec![])
            .await
            .expect("read the mark")
            == json!(true)
    }

    /// The session cookie's value (the browser can read it over WebDriver;
    /// the page's scripts cannot: `HttpOnly`).
    pub async fn session_cookie(&self) -> Option<String> {
        self.client
            .get_named_cookie("console_session")
            .await
            .ok()
            .map(|cookie| cookie.value().to_owned())
            .filter(|value| !value.is_empty())
    }

    /// With `CONSOLE_SCREENSHOTS` set (a directory, relative to the
    /// workspace root), writes the page as `<name>.png` there.
    pub async fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("CONSOLE_SCREENSHOTS") else {
            return;
        };
        // Let the live script settle and fonts load: the page is complete
        // when the DOM says so.
        self.until("the page to finish loading", || async {
            let state = self
                .client
                .execute("return document.readyState;", vec![])
                .await
                .ok()?;
            (state == json!("complete")).then_some(())
        })
        .await;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir);
        std::fs::create_dir_all(&dir).expect("screenshot directory");
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(dir.join(format!("{name}.png")), png).expect("write screenshot");
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
