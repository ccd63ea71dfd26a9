//! End-to-end tests of interrupts and of what a killed nixpack leaves:
//! `nixpack build` runs as a child process, the test waits until it
//! reaches a stage (by its stderr lines), sends SIGINT (or SIGKILL), and
//! checks what a user would see: exit 130 within 2 s, no container
//! labelled `dev.nixpack.*` left, no temporary file under `.nixpack/`, no
//! tag. Each test runs against the default engine and, when
//! `NIXPACK_TEST_CONTAINERD_HOST` is set, against the containerd-store
//! engine too.
//!
//! They need the offline builder base `nixpack-base:bookworm`.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::ListContainersOptionsBuilder;
use futures_util::StreamExt;

const BASE: &str = "nixpack-base:bookworm";

/// The engines to test: the default one, and the containerd-store one
/// when the environment names it.
fn engines() -> Vec<Option<String>> {
    let mut hosts = vec![None];
    if let Some(h) = std::env::var("NIXPACK_TEST_CONTAINERD_HOST")
        .ok()
        .filter(|h| !h.is_empty())
    {
        hosts.push(Some(h));
    }
    hosts
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn docker(host: &Option<String>) -> bollard::Docker {
    let d = match host.as_deref().and_then(|h| h.strip_prefix("unix://")) {
        Some(path) => {
            bollard::Docker::connect_with_unix(path, 120, bollard::API_DEFAULT_VERSION).unwrap()
        }
        None => bollard::Docker::connect_with_unix_defaults().unwrap(),
    };
    rt().block_on(d.negotiate_version()).unwrap()
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

fn project(manifest: &str, files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("nixpack.toml"), manifest).unwrap();
    for (p, t) in files {
        std::fs::write(dir.path().join(p), t).unwrap();
    }
    dir
}

/// One image `nixpack-e2e/<name>` from `default.nix`, over its own store
/// volume (removed by [`Resources`]).
fn manifest(name: &str, volume: &str) -> String {
    format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\nstore-volume = \"{volume}\"\n[[image]]\nname = \"nixpack-e2e/{name}\"\nexpression = \"default.nix\"\n")
}

/// A derivation that takes a minute in nix-build.
fn sleeping_expression(nonce: &str) -> String {
    format!(
        r#"builtins.derivation {{
  name = "sleepy";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo {nonce}; /bin/sleep 120; /bin/mkdir $out" ];
}}
"#
    )
}

/// A derivation of ~300 MiB of random bytes: writing its layer and
/// loading it take long enough to be interrupted.
fn big_expression(nonce: &str) -> String {
    format!(
        r#"builtins.derivation {{
  name = "big";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "echo {nonce}; /bin/mkdir $out; /usr/bin/head -c 314572800 /dev/urandom > $out/blob" ];
}}
"#
    )
}

/// A running `nixpack build` whose stderr lines arrive on a channel.
struct Build {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Build {
    fn start(dir: &Path, host: &Option<String>, args: &[&str]) -> Build {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixpack"));
        cmd.arg("build")
            .args(args)
            .current_dir(dir)
            .env("NO_COLOR", "1")
            .env("XDG_STATE_HOME", dir.join(".state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match host {
            Some(h) => cmd.env("DOCKER_HOST", h),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        let mut child = cmd.spawn().expect("nixpack starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Build {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a stderr line containing `needle`.
    fn wait_for(&mut self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "no line with `{needle}` within {limit:?}; stderr so far:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// The exit status within `limit`, or `None` (the child is then killed).
    fn exit_within(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    fn stderr(&mut self) -> String {
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            self.seen.push(l);
        }
        self.seen.join("\n")
    }
}

/// Everything a test made on one engine, removed when it ends.
struct Resources {
    host: Option<String>,
    label: String,
    images: Vec<String>,
    volumes: Vec<String>,
}

impl Drop for Resources {
    fn drop(&mut self) {
        let d = docker(&self.host);
        let rt = rt();
        for id in containers(&d, &self.label) {
            let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = rt.block_on(d.remove_container(&id, Some(opts)));
        }
        for v in &self.volumes {
            for c in containers(&d, &format!("dev.nixpack.seeding={v}")) {
                let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                    .force(true)
                    .build();
                let _ = rt.block_on(d.remove_container(&c, Some(opts)));
            }
            let _ = rt.block_on(
                d.remove_container(
                    &format!("nixpack-seeding-{v}"),
                    Some(
                        bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .build(),
                    ),
                ),
            );
            for name in [v.clone(), format!("{v}.seeded")] {
                // A container the engine was still creating when nixpack
                // exited may hold it for a moment.
                for _ in 0..25 {
                    for c in containers(&d, &self.label) {
                        let opts =
                            bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                                .force(true)
                                .build();
                        let _ = rt.block_on(d.remove_container(&c, Some(opts)));
                    }
                    let gone = rt.block_on(d.remove_volume(
                        &name,
                        None::<bollard::query_parameters::RemoveVolumeOptions>,
                    ));
                    if !matches!(
                        gone,
                        Err(bollard::errors::Error::DockerResponseServerError {
                            status_code: 409,
                            ..
                        })
                    ) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        for i in &self.images {
            let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(true)
                .build();
            let _ = rt.block_on(d.remove_image(i, Some(opts), None));
        }
    }
}

fn containers(d: &bollard::Docker, label: &str) -> Vec<String> {
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([("label", vec![label])]))
        .build();
    rt().block_on(d.list_containers(Some(opts)))
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Every container nixpack labels (`dev.nixpack.*`) that belongs to this
/// test's image or store volume.
fn leftovers(d: &bollard::Docker, image: &str, volume: &str) -> Vec<String> {
    let opts = ListContainersOptionsBuilder::default().all(true).build();
    rt().block_on(d.list_containers(Some(opts)))
        .unwrap()
        .into_iter()
        .filter(|c| {
            let labels = c.labels.clone().unwrap_or_default();
            let ours = labels.values().any(|v| v == image || v.contains(volume))
                || c.names
                    .iter()
                    .flatten()
                    .any(|n| n.contains(&format!("nixpack-seeding-{volume}")));
            ours && labels.keys().any(|k| k.starts_with("dev.nixpack."))
        })
        .map(|c| format!("{:?} {:?}", c.names, c.labels))
        .collect()
}

/// Temporary files (`.tmp*`, `*.partial-*`) anywhere under `dir`.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(".tmp") || name.contains(".partial-") {
                found.push(e.path());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    found
}

fn image_exists(d: &bollard::Docker, reference: &str) -> bool {
    rt().block_on(d.inspect_image(reference)).is_ok()
}

/// Sends SIGINT, then checks exit 130 within 2 s, no container, no
/// temporary file, no tag.
fn interrupt_and_check(b: &mut Build, d: &bollard::Docker, dir: &Path, name: &str, volume: &str) {
    b.signal("-INT");
    let t = Instant::now();
    let status = b.exit_within(Duration::from_secs(2));
    let elapsed = t.elapsed();
    let stderr = b.stderr();
    let status = status.unwrap_or_else(|| panic!("no exit within 2 s of SIGINT:\n{stderr}"));
    assert_eq!(status.code(), Some(130), "exit status {status}:\n{stderr}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
    let image = format!("nixpack-e2e/{name}");
    let left = leftovers(d, &image, volume);
    assert!(left.is_empty(), "containers left: {left:?}\n{stderr}");
    let tmp = temporaries(&dir.join(".nixpack"));
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}\n{stderr}");
    assert!(
        !image_exists(d, &format!("{image}:latest")),
        "the tag was created:\n{stderr}"
    );
}

fn require_base(d: &bollard::Docker) {
    assert!(
        image_exists(d, BASE),
        "the builder base {BASE} is missing: run scripts/make-builder-base"
    );
}

#[test]
fn ctrl_c_during_nix_build_exits_130_and_leaves_nothing() {
    for host in engines() {
        let d = docker(&host);
        require_base(&d);
        let name = unique("int-nix");
        let volume = unique("nixpack-e2e-int-store");
        let _r = Resources {
            host: host.clone(),
            label: format!("dev.nixpack.image=nixpack-e2e/{name}"),
            images: vec![format!("nixpack-e2e/{name}:latest")],
            volumes: vec![volume.clone()],
        };
        let dir = project(
            &manifest(&name, &volume),
            &[("default.nix", &sleeping_expression(&name))],
        );
        let mut b = Build::start(dir.path(), &host, &[]);
        b.wait_for(": nix-build", Duration::from_secs(120));
        b.wait_for(&name, Duration::from_secs(60));
        interrupt_and_check(&mut b, &d, dir.path(), &name, &volume);
    }
}

#[test]
fn ctrl_c_while_writing_layers_and_loading_the_image_exits_130_and_leaves_nothing() {
    for host in engines() {
        let d = docker(&host);
        require_base(&d);
        let name = unique("int-big");
        let volume = unique("nixpack-e2e-int-store");
        let _r = Resources {
            host: host.clone(),
            label: format!("dev.nixpack.image=nixpack-e2e/{name}"),
            images: vec![format!("nixpack-e2e/{name}:latest")],
            volumes: vec![volume.clone()],
        };
        let dir = project(
            &manifest(&name, &volume),
            &[("default.nix", &big_expression(&name))],
        );
        for stage in ["writing 1 of", "loading the image"] {
            let mut b = Build::start(dir.path(), &host, &[]);
            b.wait_for(stage, Duration::from_secs(300));
            // Into the stage's work, not its first line.
            std::thread::sleep(Duration::from_millis(300));
            interrupt_and_check(&mut b, &d, dir.path(), &name, &volume);
        }
    }
}

/// Issue #10 (c): the first Ctrl-C starts the clean-up; a second one
/// used to be swallowed, so a slow clean-up could not be cut short.
#[test]
fn second_ctrl_c_is_swallowed_regression_exits_at_once() {
    for host in engines() {
        let d = docker(&host);
        require_base(&d);
        let name = unique("int-twice");
        let volume = unique("nixpack-e2e-int-store");
        let _r = Resources {
            host: host.clone(),
            label: format!("dev.nixpack.image=nixpack-e2e/{name}"),
            images: vec![format!("nixpack-e2e/{name}:latest")],
            volumes: vec![volume.clone()],
        };
        let dir = project(
            &manifest(&name, &volume),
            &[("default.nix", &sleeping_expression(&name))],
        );
        let mut b = Build::start(dir.path(), &host, &[]);
        b.wait_for(": nix-build", Duration::from_secs(180));
        // The derivation's own echo: the builder container runs.
        b.wait_for(&name, Duration::from_secs(60));
        b.signal("-INT");
        b.wait_for("interrupted", Duration::from_secs(2));
        b.signal("-INT");
        let t = Instant::now();
        let status = b.exit_within(Duration::from_millis(1500));
        let stderr = b.stderr();
        let status =
            status.unwrap_or_else(|| panic!("the second SIGINT did not end it:\n{stderr}"));
        assert_eq!(status.code(), Some(130), "{stderr}");
        assert!(t.elapsed() < Duration::from_millis(1500));
    }
}

/// Issue #10 (b): Ctrl-C while another process holds the image's output
/// lock used to hang until that process let go.
#[test]
fn ctrl_c_while_waiting_for_the_output_lock_hangs_regression() {
    for host in engines() {
        let d = docker(&host);
        require_base(&d);
        let name = unique("int-lock");
        let volume = unique("nixpack-e2e-int-store");
        let _r = Resources {
            host: host.clone(),
            label: format!("dev.nixpack.image=nixpack-e2e/{name}"),
            images: vec![format!("nixpack-e2e/{name}:latest")],
            volumes: vec![volume.clone()],
        };
        let dir = project(
            &manifest(&name, &volume),
            &[("default.nix", &sleeping_expression(&name))],
        );
        let lock_dir = dir
            .path()
            .join(".nixpack")
            .join(format!("nixpack-e2e_{name}"));
        std::fs::create_dir_all(&lock_dir).unwrap();
        let held = std::fs::File::create(lock_dir.join(".lock")).unwrap();
        held.lock().unwrap();
        let mut b = Build::start(dir.path(), &host, &[]);
        b.wait_for("waiting for another nixpack", Duration::from_secs(180));
        interrupt_and_check(&mut b, &d, dir.path(), &name, &volume);
        drop(held);
    }
}

/// Issue #10 (a): a seeding lock left by a killed nixpack made the next
/// build wait 300 s; its owner is gone, so it is taken over at once.
#[test]
fn stale_seeding_lock_of_a_killed_process_waits_300s_regression() {
    for host in engines() {
        let d = docker(&host);
        require_base(&d);
        let name = unique("int-stale");
        let volume = unique("nixpack-e2e-int-store");
        let _r = Resources {
            host: host.clone(),
            label: format!("dev.nixpack.image=nixpack-e2e/{name}"),
            images: vec![format!("nixpack-e2e/{name}:latest")],
            volumes: vec![volume.clone()],
        };
        let tiny = format!(
            "builtins.derivation {{ name = \"tiny\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo {name} > $out\" ]; }}\n"
        );
        let dir = project(&manifest(&name, &volume), &[("default.nix", &tiny)]);
        let mut b = Build::start(dir.path(), &host, &[]);
        b.wait_for(
            &format!("creating volume {volume}"),
            Duration::from_secs(180),
        );
        b.signal("-KILL");
        let _ = b.exit_within(Duration::from_secs(5));
        let t = Instant::now();
        let mut again = Build::start(dir.path(), &host, &[]);
        let status = again.exit_within(Duration::from_secs(90));
        let stderr = again.stderr();
        let status = status.unwrap_or_else(|| panic!("still waiting after 90 s:\n{stderr}"));
        assert!(status.success(), "{stderr}");
        assert!(t.elapsed() < Duration::from_secs(90));
        assert!(image_exists(&d, &format!("nixpack-e2e/{name}:latest")));
    }
}

/// Issue #10 (d): a volume carrying the recipe label was taken for
/// seeded, though the seeder labels it before filling it (and an
/// interrupted seeder leaves it so). Only the marker written after
/// seeding says "seeded"; without it the volume is seeded (again).
#[test]
fn seeding_race_labelled_volume_before_seeding_completes_regression() {
    for host in engines() {
        let d = docker(&host);
        require_base(&d);
        let name = unique("int-race");
        let volume = unique("nixpack-e2e-int-store");
        let _r = Resources {
            host: host.clone(),
            label: format!("dev.nixpack.image=nixpack-e2e/{name}"),
            images: vec![format!("nixpack-e2e/{name}:latest")],
            volumes: vec![volume.clone()],
        };
        let tiny = format!(
            "builtins.derivation {{ name = \"tiny\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo {name} > $out\" ]; }}\n"
        );
        let dir = project(&manifest(&name, &volume), &[("default.nix", &tiny)]);
        // What a seeder leaves between labelling the volume and filling it:
        // a first build learns the recipe label, then the volume is made
        // again with that label and nothing in it.
        let mut first = Build::start(dir.path(), &host, &[]);
        assert!(first
            .exit_within(Duration::from_secs(300))
            .is_some_and(|s| s.success()));
        let rt = rt();
        let labels = rt.block_on(d.inspect_volume(&volume)).unwrap().labels;
        for c in containers(&d, &format!("dev.nixpack.image=nixpack-e2e/{name}")) {
            let _ = rt.block_on(d.remove_container(&c, None));
        }
        rt.block_on(d.remove_volume(
            &volume,
            None::<bollard::query_parameters::RemoveVolumeOptions>,
        ))
        .unwrap();
        rt.block_on(d.create_volume(bollard::models::VolumeCreateRequest {
            name: Some(volume.clone()),
            labels: Some(labels),
            ..Default::default()
        }))
        .unwrap();
        std::fs::remove_dir_all(dir.path().join(".nixpack")).unwrap();
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let mut second = Build::start(dir.path(), &host, &[]);
        let status = second.exit_within(Duration::from_secs(300));
        let stderr = second.stderr();
        assert!(status.is_some_and(|s| s.success()), "{stderr}");
        let seeded = seeding_containers_since(&d, &volume, since);
        assert!(
            seeded > 0,
            "the unfinished volume was used as seeded:\n{stderr}"
        );
    }
}

fn seeding_containers_since(d: &bollard::Docker, volume: &str, since: Duration) -> usize {
    let until = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1;
    let label = format!("dev.nixpack.seeding={volume}");
    let filters = HashMap::from([
        ("type", vec!["container"]),
        ("event", vec!["create"]),
        ("label", vec![label.as_str()]),
    ]);
    let opts = bollard::query_parameters::EventsOptionsBuilder::default()
        .since(&format!("{}.{:09}", since.as_secs(), since.subsec_nanos()))
        .until(&until.to_string())
        .filters(&filters)
        .build();
    rt().block_on(async { d.events(Some(opts)).collect::<Vec<_>>().await })
        .len()
}
