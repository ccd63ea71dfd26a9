//! The one place that talks to the Docker Engine (through bollard's HTTP
//! API client; never the `docker` CLI).
//!
//! Files cross between this host and containers only through the Engine's
//! archive API (`PUT`/`GET /containers/{id}/archive`) and build contexts, so
//! everything works when the engine is on another machine
//! (`DOCKER_HOST=ssh://…` or `tcp://…`). Layers are never buffered whole:
//! build contexts and image archives are written by a blocking tar writer
//! into a channel, container output and downloads are stored as they
//! arrive. The project's own files go to the builder the same way
//! ([`Upload::Stream`]).

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bollard::models::{
    ContainerCreateBody, HostConfig, Mount, MountType, PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, CreateContainerOptionsBuilder, CreateImageOptionsBuilder,
    DownloadFromContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, StopContainerOptionsBuilder, TagImageOptionsBuilder,
    UploadToContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use bollard::Docker;
use bytes::Bytes;

use crate::endpoint::{self, ChosenBy, Endpoint, EndpointError, EnvVars, Transport};

mod ssh;
use futures_util::{StreamExt, TryStreamExt};
use miette::Diagnostic;
use thiserror::Error;

/// Something the engine refused or could not do.
#[derive(Debug, Error, Diagnostic)]
#[non_exhaustive]
pub enum EngineError {
    /// No engine answered.
    #[error("cannot reach the Docker Engine at {host} (chosen by {chosen_by}): {reason}")]
    #[diagnostic(code(nixpack::engine::unreachable))]
    Unreachable {
        /// The socket or URL tried.
        host: String,
        /// Which setting chose it.
        chosen_by: ChosenBy,
        /// What the client said.
        reason: String,
        /// What to check, for this kind of address.
        #[help]
        help: String,
    },
    /// The settings that choose the engine are wrong.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Endpoint(EndpointError),
    /// An API call failed.
    #[error("Docker Engine: {action} failed: {reason}")]
    #[diagnostic(code(nixpack::engine::api))]
    Api {
        /// What nixpack was doing.
        action: String,
        /// What the engine said.
        reason: String,
    },
    /// `docker build` of a rendered Dockerfile failed.
    #[error("building {what} failed: {reason}")]
    #[diagnostic(code(nixpack::engine::build))]
    Build {
        /// Which image (builder or scratch).
        what: String,
        /// The engine's error.
        reason: String,
        /// What to check.
        #[help]
        help: Option<String>,
    },
}

/// bollard's default request timeout (long uploads raise it, see
/// [`Engine::uploading`]).
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// An error and its causes, one line: bollard's own message for a failed
/// connection is only "client error (Connect)".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text = format!("{text}: {s_text}");
        }
        source = s.source();
    }
    text
}

/// What to check when the engine chosen by `endpoint` does not answer.
fn unreachable_help(endpoint: &Endpoint) -> String {
    let choose = "or point DOCKER_HOST or a docker context (DOCKER_CONTEXT) at a running engine: \
                  unix:///PATH, tcp://HOST:2376 with DOCKER_TLS_VERIFY=1, ssh://USER@HOST";
    match &endpoint.transport {
        Transport::Unix(path) => {
            format!("start Docker (is {} its socket?), {choose}", path.display())
        }
        Transport::Tcp { tls: None, .. } => format!(
            "check that the engine listens there without TLS (with TLS, set DOCKER_TLS_VERIFY=1), {choose}"
        ),
        Transport::Tcp {
            address,
            tls: Some(tls),
        } => format!(
            "check that the engine listens there with TLS, that {} is the CA that signed its \
             certificate and that the certificate is for {}, and that the engine trusts the \
             client certificate {} (key {}); DOCKER_CERT_PATH chooses the folder of \
             ca.pem, cert.pem and key.pem; {choose}",
            tls.ca.display(),
            address.rsplit_once(':').map_or(address.as_str(), |(h, _)| h),
            tls.cert.display(),
            tls.key.display(),
        ),
        Transport::Ssh(target) => format!(
            "check that `ssh {}` works from this shell (keys, known_hosts, ~/.ssh/config) \
             and that the docker CLI is installed on {}; {choose}",
            target.ssh_args().join(" "),
            target.host
        ),
    }
}

fn api(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> EngineError {
    let action = action.into();
    move |e| EngineError::Api {
        action,
        reason: e.to_string(),
    }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// Containers and images nixpack has started or half-made, so that a
/// failure or Ctrl-C can remove them. Shared by every task of a command.
#[derive(Clone, Default)]
pub struct Cleanup {
    containers: Arc<Mutex<Vec<String>>>,
    images: Arc<Mutex<Vec<String>>>,
}

impl Cleanup {
    fn add(&self, id: &str) {
        self.containers
            .lock()
            .expect("cleanup lock")
            .push(id.to_owned());
    }

    fn forget(&self, id: &str) {
        self.containers
            .lock()
            .expect("cleanup lock")
            .retain(|c| c != id);
    }

    /// Registers an image loaded but not tagged yet: an interrupt removes it.
    pub fn add_image(&self, id: &str) {
        self.images
            .lock()
            .expect("cleanup lock")
            .push(id.to_owned());
    }

    /// The image is tagged (or kept on purpose): an interrupt leaves it.
    pub fn forget_image(&self, id: &str) {
        self.images
            .lock()
            .expect("cleanup lock")
            .retain(|i| i != id);
    }

    /// Force-removes every container still registered, all at once and
    /// without a grace period: nothing they were doing is worth keeping,
    /// and Ctrl-C must return within a couple of seconds.
    pub async fn run(&self, engine: &Engine) {
        let ids: Vec<String> = std::mem::take(&mut *self.containers.lock().expect("cleanup lock"));
        futures_util::future::join_all(ids.iter().map(|id| engine.force_remove_container(id)))
            .await;
    }

    /// [`Self::run`], then removes the registered images that are still
    /// untagged (never forced: one a tag or a container holds stays).
    pub async fn run_interrupted(&self, engine: &Engine) {
        self.run(engine).await;
        let ids: Vec<String> = std::mem::take(&mut *self.images.lock().expect("cleanup lock"));
        for id in ids {
            if let Ok(i) = engine.docker.inspect_image(&id).await {
                if i.repo_tags.unwrap_or_default().is_empty() {
                    let _ = engine.remove_image(&id).await;
                }
            }
        }
    }
}

/// Who holds an engine-wide lock (see [`Engine::try_lock`]): labels on the
/// lock container, so that a lock whose owner is gone can be taken over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOwner {
    /// Host name and machine id of the owner's machine.
    pub host: String,
    /// The kernel's boot id there: a reboot ends every owner.
    pub boot: String,
    /// The owner's process id.
    pub pid: u32,
    /// The process's start time (clock ticks since boot, `/proc/PID/stat`),
    /// so that a reused pid is not taken for the owner.
    pub start: String,
}

const LOCK_HOST: &str = "dev.nixpack.lock.host";
const LOCK_BOOT: &str = "dev.nixpack.lock.boot";
const LOCK_PID: &str = "dev.nixpack.lock.pid";
const LOCK_START: &str = "dev.nixpack.lock.start";

impl LockOwner {
    /// This process.
    pub fn me() -> LockOwner {
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .map(|s| s.trim().to_owned())
                .unwrap_or_default()
        };
        let pid = std::process::id();
        LockOwner {
            host: format!(
                "{}/{}",
                read("/proc/sys/kernel/hostname"),
                read("/etc/machine-id")
            ),
            boot: read("/proc/sys/kernel/random/boot_id"),
            pid,
            start: process_start(pid).unwrap_or_default(),
        }
    }

    fn labels(&self) -> [(String, String); 4] {
        [
            (LOCK_HOST.to_owned(), self.host.clone()),
            (LOCK_BOOT.to_owned(), self.boot.clone()),
            (LOCK_PID.to_owned(), self.pid.to_string()),
            (LOCK_START.to_owned(), self.start.clone()),
        ]
    }

    fn from_labels(labels: &HashMap<String, String>) -> Option<LockOwner> {
        Some(LockOwner {
            host: labels.get(LOCK_HOST)?.clone(),
            boot: labels.get(LOCK_BOOT)?.clone(),
            pid: labels.get(LOCK_PID)?.parse().ok()?,
            start: labels.get(LOCK_START)?.clone(),
        })
    }

    /// Whether this owner is certainly gone, as seen from `here`: on the
    /// same machine and boot, its process (pid and start time) no longer
    /// runs; on the same machine, another boot. An owner on another
    /// machine cannot be checked from here: `None`.
    pub fn gone(&self, here: &LockOwner) -> Option<bool> {
        if self.host != here.host || self.host.starts_with('/') {
            return None;
        }
        if self.boot != here.boot {
            return Some(true);
        }
        Some(process_start(self.pid).as_deref() != Some(self.start.as_str()))
    }
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks
/// since boot; `None` when there is no such process.
fn process_start(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19).map(str::to_owned)
}

/// A lock container as [`Engine::lock_facts`] sees it.
#[derive(Debug, Clone)]
pub struct LockFacts {
    /// The container's id (release or take over by id, never by name: the
    /// name may belong to a newer holder by then).
    pub id: String,
    /// Who holds it, when the lock says so (older nixpacks did not).
    pub owner: Option<LockOwner>,
    /// How long ago it was taken.
    pub age: std::time::Duration,
}

/// A connected engine./// A connected engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    /// Where it is, for messages.
    pub host: String,
    /// Where it is and which setting chose it.
    pub endpoint: Endpoint,
    /// Registered containers to remove on failure or interrupt.
    pub cleanup: Cleanup,
}

/// Writes a tar archive into a builder; may be called more than once.
pub type TarWriter =
    Arc<dyn Fn(&mut tar::Builder<ChannelWriter>) -> std::io::Result<()> + Send + Sync>;

/// A tar archive to unpack at `/` in a container before it starts.
#[derive(Clone)]
pub enum Upload {
    /// A small archive made in memory.
    Bytes(Bytes),
    /// An archive written on a blocking thread as the engine reads it, so
    /// that no part of it but one chunk is in memory (the project's files).
    Stream(TarWriter),
}

/// What to run in a container.
#[derive(Clone)]
pub struct RunSpec<'a> {
    /// Image id or reference.
    pub image: &'a str,
    /// Command (appended to the image's entrypoint).
    pub cmd: Vec<String>,
    /// Replace the image's entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Named volumes: (volume, mount point).
    pub volumes: Vec<(String, String)>,
    /// Tar archives to unpack at `/` before the container starts.
    pub uploads: Vec<Upload>,
    /// Labels for the container (so a stray one can be found).
    pub labels: HashMap<String, String>,
    /// Stdout is data, not a log: no log driver keeps a copy of it, and it
    /// is read through an attached stream (see [`Engine::run_attached`]).
    pub raw_stdout: bool,
}

impl Engine {
    /// Connects to the engine the environment chooses (see
    /// [`crate::endpoint`]), negotiates the API version and pings, so an
    /// absent engine is one clear error up front.
    pub async fn connect() -> Result<Engine, EngineError> {
        let endpoint =
            endpoint::resolve(&EnvVars::from_process()).map_err(EngineError::Endpoint)?;
        Self::connect_to(endpoint).await
    }

    /// Connects to `endpoint`, negotiates the API version and pings.
    pub async fn connect_to(endpoint: Endpoint) -> Result<Engine, EngineError> {
        let unreachable = |e: bollard::errors::Error| EngineError::Unreachable {
            host: endpoint.host.clone(),
            chosen_by: endpoint.chosen_by.clone(),
            reason: with_causes(&e),
            help: unreachable_help(&endpoint),
        };
        let docker = match &endpoint.transport {
            Transport::Unix(path) => Docker::connect_with_unix(
                &path.to_string_lossy(),
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            Transport::Tcp { address, tls: None } => Docker::connect_with_http(
                address,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            Transport::Tcp {
                address,
                tls: Some(tls),
            } => Docker::connect_with_ssl(
                address,
                &tls.key,
                &tls.cert,
                &tls.ca,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            ),
            Transport::Ssh(target) => ssh::connect(target, REQUEST_TIMEOUT_SECS),
        }
        .map_err(unreachable)?;
        let docker = docker.negotiate_version().await.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(Engine {
            docker,
            host: endpoint.host.clone(),
            endpoint,
            cleanup: Cleanup::default(),
        })
    }

    /// The engine's CPU architecture in image-config terms (`amd64`, …).
    pub async fn architecture(&self) -> Result<String, EngineError> {
        let v = self
            .docker
            .version()
            .await
            .map_err(api("asking the engine's version"))?;
        Ok(v.arch.unwrap_or_else(|| "amd64".to_owned()))
    }

    /// The client for requests whose body is a stream of unknown length
    /// (a build context, an image archive): the engine answers them only
    /// when the body has ended, so bollard's two-minute request timeout
    /// would cut off a big closure. Ctrl-C still stops them.
    fn uploading(&self) -> Docker {
        self.docker
            .clone()
            .with_timeout(std::time::Duration::from_secs(24 * 3600))
    }

    /// The raw client, for the few calls that are used in one place only.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The image's id and labels, or `None` when it is not present.
    pub async fn inspect_image(&self, reference: &str) -> Result<Option<ImageFacts>, EngineError> {
        match self.docker.inspect_image(reference).await {
            Ok(i) => Ok(Some(ImageFacts {
                id: i.id.unwrap_or_default(),
                size: i.size.unwrap_or(0).max(0) as u64,
                labels: i.config.and_then(|c| c.labels).unwrap_or_default(),
                layers: i.root_fs.and_then(|r| r.layers).unwrap_or_default(),
            })),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting image {reference}"))(e)),
        }
    }

    /// Pulls `reference`, reporting progress lines.
    pub async fn pull(
        &self,
        reference: &str,
        credentials: Option<crate::registry::auth::Credentials>,
        mut progress: impl FnMut(&str),
    ) -> Result<(), EngineError> {
        use crate::registry::auth::Credentials;
        let opts = CreateImageOptionsBuilder::default()
            .from_image(reference)
            .build();
        let registry = crate::registry::auth::registry_of(reference).to_owned();
        let credentials = credentials.map(|c| match c {
            Credentials::Basic { username, password } => bollard::auth::DockerCredentials {
                username: Some(username),
                password: Some(password),
                serveraddress: Some(registry),
                ..Default::default()
            },
            Credentials::IdentityToken(t) => bollard::auth::DockerCredentials {
                identitytoken: Some(t),
                serveraddress: Some(registry),
                ..Default::default()
            },
        });
        let mut s = self.docker.create_image(Some(opts), None, credentials);
        while let Some(item) = s.next().await {
            let info = item.map_err(api(format!("pulling {reference}")))?;
            if let Some(err) = info.error_detail.and_then(|d| d.message) {
                return Err(EngineError::Api {
                    action: format!("pulling {reference}"),
                    reason: err,
                });
            }
            if let Some(status) = info.status {
                let id = info.id.map(|i| format!("{i}: ")).unwrap_or_default();
                progress(&format!("{id}{status}"));
            }
        }
        Ok(())
    }

    /// Builds an image from a streamed context and returns its id. The
    /// context is produced by `write_context` on a blocking thread.
    pub async fn build(
        &self,
        what: &str,
        labels: HashMap<String, String>,
        write_context: impl FnOnce(&mut tar::Builder<ChannelWriter>) -> std::io::Result<()>
            + Send
            + 'static,
        mut on_log: impl FnMut(&str),
    ) -> Result<String, EngineError> {
        let (body, producer) = tar_body(write_context);
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .rm(true)
            .forcerm(true)
            .labels(&labels)
            .build();
        let docker = self.uploading();
        let mut s = docker.build_image(opts, None, Some(bollard::body_try_stream(body)));
        let mut id = None;
        let mut tail: Vec<String> = Vec::new();
        let mut failure = None;
        // Images this build made for its steps (not the ones reused from
        // the cache): a failed build removes them.
        let mut steps: Vec<String> = Vec::new();
        let mut cached = false;
        while let Some(item) = s.next().await {
            match item {
                Ok(info) => {
                    if let Some(text) = info.stream {
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            let step = line.trim().strip_prefix("---> ");
                            if step == Some("Using cache") {
                                cached = true;
                            } else if let Some(step) = step.filter(|s| is_short_id(s)) {
                                let reused = std::mem::replace(&mut cached, false);
                                if !reused {
                                    steps.push(step.to_owned());
                                }
                            }
                            on_log(line);
                            tail.push(line.to_owned());
                            if tail.len() > 20 {
                                tail.remove(0);
                            }
                        }
                    }
                    if let Some(d) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(d);
                    }
                    if let Some(i) = info.aux.and_then(|a| a.id) {
                        id = Some(i);
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let _ = producer.await;
        if let Some(reason) = failure {
            // Newest first, never forced: a step image something else uses
            // (a child, a container) stays.
            for step in steps.iter().rev() {
                let _ = self.remove_image(step).await;
            }
            return Err(EngineError::Build {
                what: what.to_owned(),
                reason,
                help: None,
            });
        }
        id.ok_or_else(|| EngineError::Build {
            what: what.to_owned(),
            reason: "the engine reported no image id".into(),
            help: None,
        })
    }

    /// Loads an image archive (`POST /images/load`) written by
    /// `write_archive` on a blocking thread; returns the id the engine
    /// reports (`Loaded image ID: …`: the config digest on the classic
    /// image store, the manifest digest on containerd's).
    pub async fn load(
        &self,
        write_archive: impl FnOnce(&mut tar::Builder<ChannelWriter>) -> std::io::Result<()>
            + Send
            + 'static,
    ) -> Result<String, EngineError> {
        let (body, producer) = tar_body(write_archive);
        let opts = bollard::query_parameters::ImportImageOptionsBuilder::default()
            .quiet(true)
            .build();
        let docker = self.uploading();
        let mut s = docker.import_image(opts, bollard::body_try_stream(body), None);
        let mut id = None;
        let mut failure = None;
        while let Some(item) = s.next().await {
            match item {
                Ok(info) => {
                    if let Some(d) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(d);
                    }
                    if let Some(i) = info
                        .stream
                        .as_deref()
                        .and_then(|t| t.trim().strip_prefix("Loaded image ID: "))
                    {
                        id = Some(i.to_owned());
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let produced = producer.await;
        if let Some(reason) = failure {
            return Err(EngineError::Api {
                action: "loading the image".into(),
                reason,
            });
        }
        if let Ok(Err(e)) = produced {
            return Err(EngineError::Api {
                action: "writing the image archive".into(),
                reason: e.to_string(),
            });
        }
        let id = id.ok_or_else(|| EngineError::Api {
            action: "loading the image".into(),
            reason: "the engine reported no image id".into(),
        })?;
        self.cleanup.add_image(&id);
        Ok(id)
    }

    /// Tags `id` as `repo:tag`.
    pub async fn tag(&self, id: &str, repo: &str, tag: &str) -> Result<(), EngineError> {
        let opts = TagImageOptionsBuilder::default()
            .repo(repo)
            .tag(tag)
            .build();
        self.docker
            .tag_image(id, Some(opts))
            .await
            .map_err(api(format!("tagging {repo}:{tag}")))
    }

    /// Removes an image nixpack made and nothing else uses: never forced, so
    /// an image another tag or a container still holds is left alone. No
    /// error when it is already gone.
    pub async fn remove_image(&self, reference: &str) -> Result<(), EngineError> {
        let opts = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("removing image {reference}"))(e)),
        }
    }

    /// A volume's labels and creation time, or `None` when it does not exist.
    pub async fn volume_facts(
        &self,
        name: &str,
    ) -> Result<Option<(HashMap<String, String>, String)>, EngineError> {
        match self.docker.inspect_volume(name).await {
            Ok(v) => Ok(Some((v.labels, v.created_at.unwrap_or_default()))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(api(format!("inspecting volume {name}"))(e)),
        }
    }

    /// Removes a volume (no error when it is already gone).
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api(format!("removing volume {name}"))(e)),
        }
    }

    /// Whether a container of this name exists.
    pub async fn container_exists(&self, name: &str) -> Result<bool, EngineError> {
        match self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(api(format!("inspecting container {name}"))(e)),
        }
    }

    /// An engine-wide lock: creates a (never started) container called
    /// `name`, labelled with its owner ([`LockOwner`]); its id, or `None`
    /// when another client holds it. Release it with
    /// [`Engine::force_remove_container`] by that id; it is registered for
    /// cleanup.
    pub async fn try_lock(&self, name: &str, image: &str) -> Result<Option<String>, EngineError> {
        let mut labels = HashMap::from([("dev.nixpack.lock".to_owned(), name.to_owned())]);
        labels.extend(LockOwner::me().labels());
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        match self.docker.create_container(Some(opts), body).await {
            Ok(created) => {
                self.cleanup.add(&created.id);
                Ok(Some(created.id))
            }
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409, ..
            }) => Ok(None),
            Err(e) => Err(api(format!("creating the lock {name}"))(e)),
        }
    }

    /// The lock container `name`, or `None` when nobody holds it.
    pub async fn lock_facts(&self, name: &str) -> Result<Option<LockFacts>, EngineError> {
        let c = match self
            .docker
            .inspect_container(
                name,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(c) => c,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => return Err(api(format!("inspecting the lock {name}"))(e)),
        };
        let labels = c.config.and_then(|c| c.labels).unwrap_or_default();
        let created = c
            .created
            .as_deref()
            .and_then(crate::engine::unix_seconds)
            .unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Ok(Some(LockFacts {
            id: c.id.unwrap_or_else(|| name.to_owned()),
            owner: LockOwner::from_labels(&labels),
            age: std::time::Duration::from_secs(now.saturating_sub(created)),
        }))
    }

    /// Every container, running or not, with `label` (`key` or `key=value`).
    async fn containers_labelled(
        &self,
        label: &str,
    ) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&HashMap::from([("label", vec![label])]))
            .build();
        self.docker
            .list_containers(Some(opts))
            .await
            .map_err(api("listing containers"))
    }

    /// Force-removes every container with `label` (`key=value`).
    pub async fn remove_containers_labelled(&self, label: &str) -> Result<(), EngineError> {
        let list = self.containers_labelled(label).await?;
        for c in list.into_iter().filter_map(|c| c.id) {
            self.force_remove_container(&c).await?;
        }
        Ok(())
    }

    /// Removes an image by reference, never forced, and says what became
    /// of it: a container that uses it keeps it.
    pub async fn remove_image_if_unused(&self, reference: &str) -> Result<Removal, EngineError> {
        let opts = RemoveImageOptionsBuilder::default().force(false).build();
        match self.docker.remove_image(reference, Some(opts), None).await {
            Ok(_) => Ok(Removal::Removed),
            Err(e) if is_not_found(&e) => Ok(Removal::Gone),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Ok(Removal::InUse(message)),
            Err(e) => Err(api(format!("removing image {reference}"))(e)),
        }
    }

    /// Removes a volume unless a container uses it, and says which.
    pub async fn remove_volume_if_unused(&self, name: &str) -> Result<Removal, EngineError> {
        match self
            .docker
            .remove_volume(name, None::<bollard::query_parameters::RemoveVolumeOptions>)
            .await
        {
            Ok(()) => Ok(Removal::Removed),
            Err(e) if is_not_found(&e) => Ok(Removal::Gone),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message,
            }) => Ok(Removal::InUse(message)),
            Err(e) => Err(api(format!("removing volume {name}"))(e)),
        }
    }

    /// Images matching `filters` (`label`, `dangling`, `reference`, …):
    /// id, tags, labels and size.
    pub async fn list_images(
        &self,
        filters: HashMap<&str, Vec<&str>>,
    ) -> Result<Vec<ListedImage>, EngineError> {
        let opts = bollard::query_parameters::ListImagesOptionsBuilder::default()
            .filters(&filters)
            .build();
        let list = self
            .docker
            .list_images(Some(opts))
            .await
            .map_err(api("listing images"))?;
        Ok(list
            .into_iter()
            .map(|i| ListedImage {
                id: i.id,
                tags: i
                    .repo_tags
                    .into_iter()
                    .filter(|t| t != "<none>:<none>")
                    .collect(),
                labels: i.labels,
                size: i.size.max(0) as u64,
            })
            .collect())
    }

    /// The names of the containers labelled `label` (`key` or `key=value`).
    pub async fn container_names_labelled(&self, label: &str) -> Result<Vec<String>, EngineError> {
        let list = self.containers_labelled(label).await?;
        Ok(list
            .into_iter()
            .filter_map(|c| {
                c.names?
                    .first()
                    .map(|n| n.trim_start_matches('/').to_owned())
            })
            .collect())
    }

    /// Every volume's size in bytes, from the engine's disk-usage endpoint
    /// (`GET /system/df`), for a local engine (`unix://`); empty when it
    /// cannot say. bollard 0.21 reads only the answer of API 1.52 and later
    /// (`VolumeUsage`); the engines before it answer `Volumes`, which it
    /// drops, so this one request is made on the socket directly.
    pub async fn volume_sizes(&self) -> HashMap<String, u64> {
        let Some(path) = self.host.strip_prefix("unix://") else {
            return HashMap::new();
        };
        let answer = async {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::UnixStream::connect(path).await?;
            s.write_all(b"GET /system/df?type=volume HTTP/1.0\r\nHost: docker\r\n\r\n")
                .await?;
            let mut all = Vec::new();
            s.read_to_end(&mut all).await?;
            Ok::<_, std::io::Error>(all)
        };
        let Ok(Ok(all)) = tokio::time::timeout(std::time::Duration::from_secs(60), answer).await
        else {
            return HashMap::new();
        };
        let text = String::from_utf8_lossy(&all);
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        parse_volume_sizes(body)
    }

    /// Creates a volume (idempotent on the engine's side).
    pub async fn create_volume(
        &self,
        name: &str,
        labels: HashMap<String, String>,
    ) -> Result<(), EngineError> {
        let req = VolumeCreateRequest {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..Default::default()
        };
        self.docker
            .create_volume(req)
            .await
            .map(|_| ())
            .map_err(api(format!("creating volume {name}")))
    }

    /// Creates a container (registered for cleanup), uploads `spec.uploads`.
    pub async fn create_container(
        &self,
        spec: &RunSpec<'_>,
        ports: &[Published],
    ) -> Result<String, EngineError> {
        self.create_container_with(spec, ports, false).await
    }

    /// [`Self::create_container`]; with `tty`, the container gets a
    /// terminal and an open stdin (see [`Self::run_tty`]).
    pub async fn create_container_with(
        &self,
        spec: &RunSpec<'_>,
        ports: &[Published],
        tty: bool,
    ) -> Result<String, EngineError> {
        let mounts = spec
            .volumes
            .iter()
            .map(|(v, at)| Mount {
                source: Some(v.clone()),
                target: Some(at.clone()),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            })
            .collect();
        let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for p in ports {
            port_bindings
                .entry(p.container.clone())
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(PortBinding {
                    host_ip: Some(p.ip.clone()),
                    host_port: Some(p.host.to_string()),
                });
        }
        let body = ContainerCreateBody {
            image: Some(spec.image.to_owned()),
            cmd: (!spec.cmd.is_empty()).then(|| spec.cmd.clone()),
            entrypoint: spec.entrypoint.clone(),
            env: Some(spec.env.clone()),
            labels: Some(spec.labels.clone()),
            exposed_ports: (!ports.is_empty())
                .then(|| ports.iter().map(|p| p.container.clone()).collect()),
            tty: tty.then_some(true),
            open_stdin: tty.then_some(true),
            attach_stdin: tty.then_some(true),
            attach_stdout: tty.then_some(true),
            attach_stderr: tty.then_some(true),
            host_config: Some(HostConfig {
                mounts: Some(mounts),
                log_config: spec
                    .raw_stdout
                    .then(|| bollard::models::HostConfigLogConfig {
                        typ: Some("none".into()),
                        config: None,
                    }),
                port_bindings: (!ports.is_empty()).then_some(port_bindings),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = self
            .docker
            .create_container(Some(CreateContainerOptionsBuilder::default().build()), body)
            .await
            .map_err(api(format!("creating a container from {}", spec.image)))?;
        let id = created.id;
        self.cleanup.add(&id);
        for upload in &spec.uploads {
            self.upload(&id, upload).await?;
        }
        Ok(id)
    }

    /// Unpacks one archive at `/` in container `id`.
    async fn upload(&self, id: &str, upload: &Upload) -> Result<(), EngineError> {
        let opts = UploadToContainerOptionsBuilder::default().path("/").build();
        let what = "uploading files into the builder";
        match upload {
            Upload::Bytes(bytes) => self
                .docker
                .upload_to_container(id, Some(opts), bollard::body_full(bytes.clone()))
                .await
                .map_err(api(what)),
            Upload::Stream(write) => {
                let write = write.clone();
                let (body, producer) = tar_body(move |b| write(b));
                let sent = self
                    .uploading()
                    .upload_to_container(id, Some(opts), bollard::body_try_stream(body))
                    .await;
                // The writer's own error (a file that could not be read)
                // says more than the engine's "unexpected EOF".
                match producer.await {
                    Ok(Err(e)) => Err(EngineError::Api {
                        action: what.into(),
                        reason: e.to_string(),
                    }),
                    _ => sent.map_err(api(what)),
                }
            }
        }
    }

    /// Starts a container, streams its output lines to `on_line`, waits,
    /// and returns the exit code. The container is left for [`Self::download`]
    /// and [`Self::remove_container`].
    pub async fn start_and_wait(
        &self,
        id: &str,
        mut on_line: impl FnMut(&str),
    ) -> Result<i64, EngineError> {
        self.docker
            .start_container(id, None)
            .await
            .map_err(api("starting a container"))?;
        let opts = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let mut logs = self.docker.logs(id, Some(opts));
        let mut pending = String::new();
        while let Some(item) = logs.next().await {
            let Ok(out) = item else { break };
            pending.push_str(&String::from_utf8_lossy(&out.into_bytes()));
            while let Some(i) = pending.find('\n') {
                let line: String = pending.drain(..=i).collect();
                on_line(line.trim_end_matches(['\n', '\r']));
            }
        }
        if !pending.is_empty() {
            on_line(&pending);
        }
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut wait = self.docker.wait_container(id, Some(opts));
        match wait.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(api("waiting for a container")(e)),
            None => Err(EngineError::Api {
                action: "waiting for a container".into(),
                reason: "the engine closed the stream".into(),
            }),
        }
    }

    /// Copies the folder `path` out of a container into `dest` (created),
    /// unpacking as the archive streams in.
    pub async fn download(&self, id: &str, path: &str, dest: &Path) -> Result<(), EngineError> {
        let opts = DownloadFromContainerOptionsBuilder::default()
            .path(path)
            .build();
        let stream = self
            .docker
            .download_from_container(id, Some(opts))
            .map_err(std::io::Error::other);
        let reader = tokio_util::io::StreamReader::new(stream);
        let sync = tokio_util::io::SyncIoBridge::new(reader);
        let dest = dest.to_owned();
        let what = format!("copying {path} out of the builder");
        tokio::task::spawn_blocking(move || unpack_stripped(sync, &dest))
            .await
            .map_err(|e| EngineError::Api {
                action: what.clone(),
                reason: e.to_string(),
            })?
            .map_err(|e| EngineError::Api {
                action: what,
                reason: e.to_string(),
            })
    }

    /// Stops (briefly) and removes a container and its anonymous volumes.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.cleanup.forget(id);
        let _ = self
            .docker
            .stop_container(
                id,
                Some(StopContainerOptionsBuilder::default().t(2).build()),
            )
            .await;
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api("removing a container")(e)),
        }
    }

    /// Removes a container at once (killing it if it runs) and its
    /// anonymous volumes: for clean-up, where nothing it does matters.
    pub async fn force_remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.cleanup.forget(id);
        let opts = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        match self.docker.remove_container(id, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api("removing a container")(e)),
        }
    }

    /// Runs a created TTY container attached to this terminal: the host's
    /// stdin goes to it, its terminal's bytes to stdout, its terminal is
    /// sized like ours; returns its exit code. The caller removes it.
    pub async fn run_tty(&self, id: &str, size: Option<(u16, u16)>) -> Result<i64, EngineError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let opts = bollard::query_parameters::AttachContainerOptionsBuilder::default()
            .stream(true)
            .stdin(true)
            .stdout(true)
            .stderr(true)
            .build();
        let bollard::container::AttachContainerResults {
            mut output,
            mut input,
        } = self
            .docker
            .attach_container(id, Some(opts))
            .await
            .map_err(api("attaching to a container"))?;
        self.docker
            .start_container(id, None)
            .await
            .map_err(api("starting a container"))?;
        if let Some((rows, cols)) = size {
            let resize = bollard::query_parameters::ResizeContainerTTYOptionsBuilder::default()
                .h(i32::from(rows))
                .w(i32::from(cols))
                .build();
            let _ = self.docker.resize_container_tty(id, resize).await;
        }
        let pump = async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = [0u8; 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if input.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        let _ = input.flush().await;
                    }
                }
            }
            std::future::pending::<()>().await
        };
        let show = async {
            let mut stdout = tokio::io::stdout();
            while let Some(Ok(out)) = output.next().await {
                if stdout.write_all(&out.into_bytes()).await.is_err() {
                    break;
                }
                let _ = stdout.flush().await;
            }
        };
        tokio::select! {
            _ = show => {}
            _ = pump => {}
        }
        let opts = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        match self.docker.wait_container(id, Some(opts)).next().await {
            Some(Ok(r)) => Ok(r.status_code),
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(api("waiting for a container")(e)),
            None => Ok(0),
        }
    }

    /// Runs a container to completion with its stdout as a byte stream:
    /// attach before starting, send stdout chunks to `stdout` as they come
    /// (waiting while its reader is behind) and stderr lines to
    /// `on_stderr`, wait, and always remove it.
    pub async fn run_attached(
        &self,
        spec: &RunSpec<'_>,
        stdout: tokio::sync::mpsc::Sender<Bytes>,
        mut on_stderr: impl FnMut(&str),
    ) -> Result<i64, EngineError> {
        let id = self.create_container(spec, &[]).await?;
        let result = async {
            let opts = bollard::query_parameters::AttachContainerOptionsBuilder::default()
                .stream(true)
                .stdout(true)
                .stderr(true)
                .build();
            let mut attached = self
                .docker
                .attach_container(&id, Some(opts))
                .await
                .map_err(api("attaching to a container"))?;
            self.docker
                .start_container(&id, None)
                .await
                .map_err(api("starting a container"))?;
            let mut pending = String::new();
            while let Some(item) = attached.output.next().await {
                match item.map_err(api("reading a container's output"))? {
                    bollard::container::LogOutput::StdOut { message } => {
                        stdout.send(message).await.map_err(|_| EngineError::Api {
                            action: "storing a container's output".into(),
                            reason: "its reader stopped".into(),
                        })?
                    }
                    other => {
                        pending.push_str(&String::from_utf8_lossy(&other.into_bytes()));
                        while let Some(i) = pending.find('\n') {
                            let line: String = pending.drain(..=i).collect();
                            on_stderr(line.trim_end());
                        }
                    }
                }
            }
            if !pending.is_empty() {
                on_stderr(&pending);
            }
            let opts = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            match self.docker.wait_container(&id, Some(opts)).next().await {
                Some(Ok(r)) => Ok(r.status_code),
                Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
                    Ok(code)
                }
                Some(Err(e)) => Err(api("waiting for a container")(e)),
                None => Ok(0),
            }
        }
        .await;
        let removed = self.remove_container(&id).await;
        let code = result?;
        removed?;
        Ok(code)
    }

    /// Runs a container to completion: create, upload, start, stream
    /// output, download `download` to `dest`, and always remove it.
    pub async fn run_to_completion(
        &self,
        spec: &RunSpec<'_>,
        on_line: impl FnMut(&str),
        download: Option<(&str, &Path)>,
    ) -> Result<i64, EngineError> {
        let id = self.create_container(spec, &[]).await?;
        let result = async {
            let code = self.start_and_wait(&id, on_line).await?;
            if let Some((path, dest)) = download {
                self.download(&id, path, dest).await?;
            }
            Ok(code)
        }
        .await;
        let removed = self.remove_container(&id).await;
        let code = result?;
        removed?;
        Ok(code)
    }
}

/// A container port published on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// `8080/tcp`.
    pub container: String,
    /// Host address.
    pub ip: String,
    /// Host port.
    pub host: u16,
}

/// What became of something nixpack tried to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Removed.
    Removed,
    /// It was not there.
    Gone,
    /// A container (or, for an image, another image or tag) still uses
    /// it; the engine's words.
    InUse(String),
}

/// An image as the engine lists it.
#[derive(Debug, Clone)]
pub struct ListedImage {
    /// `sha256:…`.
    pub id: String,
    /// `repo:tag` names (none for a dangling image).
    pub tags: Vec<String>,
    /// Config labels.
    pub labels: HashMap<String, String>,
    /// Size in bytes.
    pub size: u64,
}

/// Volume name → size from a `/system/df` answer of any API version:
/// `Volumes` (before 1.52) or `VolumeUsage.Items`. A size of -1 (not
/// computed) is left out.
pub fn parse_volume_sizes(body: &str) -> HashMap<String, u64> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body) else {
        return HashMap::new();
    };
    let items = v
        .get("Volumes")
        .or_else(|| v.get("VolumeUsage").and_then(|u| u.get("Items")))
        .and_then(|i| i.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .filter_map(|i| {
            let name = i.get("Name")?.as_str()?.to_owned();
            let size = i.get("UsageData")?.get("Size")?.as_i64()?;
            Some((name, u64::try_from(size).ok()?))
        })
        .collect()
}

/// What nixpack reads of an image.
#[derive(Debug, Clone)]
pub struct ImageFacts {
    /// `sha256:…` image id.
    pub id: String,
    /// Size in bytes.
    pub size: u64,
    /// Config labels.
    pub labels: HashMap<String, String>,
    /// Layer DiffIDs, bottom first.
    pub layers: Vec<String>,
}

const CHUNK: usize = 256 * 1024;

/// Seconds since the Unix epoch of an RFC 3339 UTC time as the engine
/// writes it (`2026-11-24T23:26:24.123456789Z`; a numeric offset is
/// applied).
pub fn unix_seconds(t: &str) -> Option<u64> {
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (clock, offset) = match time.find(['Z', '+', '-']) {
        Some(i) => (&time[..i], &time[i..]),
        None => (time, "Z"),
    };
    let mut c = clock.split(':');
    let h: i64 = c.next()?.parse().ok()?;
    let min: i64 = c.next()?.parse().ok()?;
    let sec: i64 = c.next()?.split('.').next()?.parse().ok()?;
    let off = match offset.as_bytes().first() {
        Some(b'+') | Some(b'-') => {
            let sign = if offset.starts_with('-') { -1 } else { 1 };
            let mut o = offset[1..].split(':');
            let oh: i64 = o.next()?.parse().ok()?;
            let om: i64 = o.next().unwrap_or("0").parse().ok()?;
            sign * (oh * 3600 + om * 60)
        }
        _ => 0,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    u64::try_from(days * 86400 + h * 3600 + min * 60 + sec - off).ok()
}

/// A short image id as the Engine's builder prints it after each step.
fn is_short_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A request body fed by a tar writer running on a blocking thread; the
/// handle reports the writer's own error, if any.
fn tar_body(
    write: impl FnOnce(&mut tar::Builder<ChannelWriter>) -> std::io::Result<()> + Send + 'static,
) -> (
    impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    let writer = ChannelWriter {
        tx: tx.clone(),
        buf: Vec::with_capacity(CHUNK),
    };
    let producer = tokio::task::spawn_blocking(move || {
        let mut b = tar::Builder::new(writer);
        b.follow_symlinks(false);
        let r = write(&mut b)
            .and_then(|_| b.into_inner())
            .and_then(|mut w| w.flush());
        if let Err(e) = &r {
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), e.to_string())));
        }
        r
    });
    let body =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    (body, producer)
}

/// A `Write` that sends 256 KiB chunks into a channel: the bridge from a
/// blocking tar writer to an async request body.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the engine stopped reading the archive",
            )
        })
    }
}

/// Unpacks an archive whose entries all start with one folder name (as
/// the archive API returns them) into `dest`, dropping that first part.
/// Each file is written under a temporary name and renamed when complete,
/// so an interrupted download never leaves a truncated layer behind.
fn unpack_stripped(reader: impl std::io::Read, dest: &Path) -> std::io::Result<()> {
    use std::path::Component;
    std::fs::create_dir_all(dest)?;
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let original = entry.path()?.into_owned();
        let mut parts = original.components().skip(1).peekable();
        if parts.peek().is_none() {
            continue;
        }
        let mut rel = PathBuf::new();
        for c in parts {
            match c {
                Component::Normal(n) => rel.push(n),
                _ => {
                    return Err(std::io::Error::other(format!(
                        "refusing to unpack {}",
                        original.display()
                    )))
                }
            }
        }
        let target = dest.join(&rel);
        if entry.header().entry_type().is_dir() {
            std::fs::create_dir_all(&target)?;
            continue;
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        // Unique per process and entry: two builds may fetch the same layer.
        let partial = crate::outputs::partial_path(&target)?;
        if let Err(e) = entry.unpack(&partial) {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
        std::fs::rename(&partial, &target)?;
    }
    Ok(())
}

#[cfg(test)]
mod df_tests {
    use super::*;

    #[test]
    fn volume_sizes_are_read_from_both_df_layouts() {
        let old = r#"{"Volumes":[{"Name":"a","UsageData":{"Size":42,"RefCount":0}},{"Name":"b","UsageData":{"Size":-1,"RefCount":0}}]}"#;
        assert_eq!(
            parse_volume_sizes(old),
            HashMap::from([("a".to_owned(), 42)])
        );
        let new = r#"{"VolumeUsage":{"Items":[{"Name":"c","UsageData":{"Size":7,"RefCount":1}}]}}"#;
        assert_eq!(
            parse_volume_sizes(new),
            HashMap::from([("c".to_owned(), 7)])
        );
        assert!(parse_volume_sizes("not json").is_empty());
    }

    #[test]
    fn engine_times_are_read_as_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            unix_seconds("2026-11-24T23:26:24.123456789Z"),
            Some(1_795_562_784)
        );
        assert_eq!(
            unix_seconds("2026-11-25T00:26:24+01:00"),
            Some(1_795_562_784)
        );
        assert_eq!(unix_seconds("yesterday"), None);
    }
}
