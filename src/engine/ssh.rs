//! `DOCKER_HOST=ssh://[USER@]HOST[:PORT]`, done the way the docker CLI does
//! it: every connection is `ssh -o ConnectTimeout=30 -T [-l USER] [-p PORT]
//! -- HOST docker system dial-stdio`, and HTTP runs over that process's
//! stdin and stdout. So the user's ssh config, keys, agent and known_hosts
//! apply unchanged, and the remote host needs sshd and the docker CLI.
//!
//! (bollard's own ssh transport drops the port of the address and accepts
//! unknown host keys into `~/.ssh/known_hosts`; this one does neither.)

use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::process::{Child, ChildStdin, ChildStdout};

use crate::endpoint::SshTarget;

/// What ssh printed on stderr lately (the reason a connection failed:
/// "Permission denied", "Host key verification failed", …).
type Stderr = Arc<Mutex<String>>;

/// A client for the engine behind `target`. Connects lazily: the first
/// request starts the first `ssh`.
pub(super) fn connect(
    target: &SshTarget,
    timeout_secs: u64,
) -> Result<Docker, bollard::errors::Error> {
    let stderr = Stderr::default();
    let connector = Connector {
        args: Arc::new(target.ssh_args()),
        stderr: stderr.clone(),
    };
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let transport = move |req: BollardRequest| {
        let client = client.clone();
        let stderr = stderr.clone();
        async move {
            match client.request(req).await {
                Ok(response) => Ok(response),
                Err(e) => Err(explain(e, &stderr).await),
            }
        }
    };
    // The address only fills the requests' Host header; the connector
    // ignores it.
    Docker::connect_with_custom_transport(
        transport,
        Some("http://docker"),
        timeout_secs,
        bollard::API_DEFAULT_VERSION,
    )
}

/// A failed request, with what ssh said about it when it said anything.
async fn explain(e: hyper_util::client::legacy::Error, stderr: &Stderr) -> bollard::errors::Error {
    // ssh closes its stdout (which fails the request) before its last
    // words on stderr are read: give them a moment.
    let mut said = String::new();
    for _ in 0..20 {
        said = stderr.lock().expect("ssh stderr").trim().to_owned();
        if !said.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if said.is_empty() {
        return e.into();
    }
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        reason = format!("{reason}: {s}");
        source = s.source();
    }
    bollard::errors::Error::IOError {
        err: std::io::Error::other(format!("ssh said: {said} ({reason})")),
    }
}

/// Starts one `ssh … docker system dial-stdio` per connection.
#[derive(Clone)]
struct Connector {
    args: Arc<Vec<String>>,
    stderr: Stderr,
}

impl tower_service::Service<hyper::Uri> for Connector {
    type Response = TokioIo<SshIo>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        let args = self.args.clone();
        let said = self.stderr.clone();
        Box::pin(async move {
            let mut child = tokio::process::Command::new("ssh")
                .args(args.iter())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot run `ssh`: {e}")))?;
            let stdin = child.stdin.take().expect("piped stdin");
            let stdout = child.stdout.take().expect("piped stdout");
            let mut stderr = child.stderr.take().expect("piped stderr");
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                    let mut s = said.lock().expect("ssh stderr");
                    s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    // Keep the last words only.
                    if s.len() > 4096 {
                        let cut = s.len() - 2048;
                        let cut = (cut..s.len()).find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                        s.drain(..cut);
                    }
                }
            });
            Ok(TokioIo::new(SshIo {
                _child: child,
                stdin,
                stdout,
            }))
        })
    }
}

/// One connection: the engine's bytes come from ssh's stdout, ours go to
/// its stdin. Dropping it kills the ssh process.
struct SshIo {
    _child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl AsyncRead for SshIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdout).poll_read(cx, buf)
    }
}

impl AsyncWrite for SshIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stdin).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stdin).poll_shutdown(cx)
    }
}

impl Connection for SshIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}
