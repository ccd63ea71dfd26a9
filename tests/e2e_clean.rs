//! End-to-end tests of `nixpack clean`, `nixpack gc` and `nixpack run`
//! against the real engines (the default one, and the containerd-store one
//! when `NIXPACK_TEST_CONTAINERD_HOST` names it). Each test keeps its own
//! registry (`XDG_STATE_HOME` in a temporary folder), so gc only ever sees
//! what the test built.
//!
//! They need the offline builder base `nixpack-base:bookworm`.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BASE: &str = "nixpack-base:bookworm";

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

/// `nixpack ARGS` in `dir` on `host`, with the registry in `state`.
fn nixpack(dir: &Path, host: &Option<String>, state: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixpack"));
    cmd.args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", state);
    match host {
        Some(h) => cmd.env("DOCKER_HOST", h),
        None => cmd.env_remove("DOCKER_HOST"),
    };
    cmd.output().expect("nixpack runs")
}

fn ok(out: Output) -> (String, String) {
    let (o, e) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "failed ({}):\n{o}\n{e}", out.status);
    (o, e)
}

fn image_exists(d: &bollard::Docker, r: &str) -> bool {
    rt().block_on(d.inspect_image(r)).is_ok()
}

fn volume_exists(d: &bollard::Docker, v: &str) -> bool {
    rt().block_on(d.inspect_volume(v)).is_ok()
}

/// A project whose builder is its own (a builder template with a nonce),
/// so its builder image and store volume are its own too.
fn own_builder_project(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/builder.Dockerfile.hbs"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("builder.Dockerfile.hbs"),
        format!("{template}\n# {name}\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("nixpack.toml"),
        format!("[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n[builder.templates]\nbuilder = \"builder.Dockerfile.hbs\"\n[[image]]\nname = \"nixpack-e2e/{name}\"\nexpression = \"default.nix\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("default.nix"),
        format!("builtins.derivation {{ name = \"tiny\"; system = builtins.currentSystem; builder = \"/bin/sh\"; args = [ \"-c\" \"echo {name} > $out\" ]; }}\n"),
    )
    .unwrap();
    dir
}

fn report(dir: &Path, name: &str) -> serde_json::Value {
    let p = dir
        .join(".nixpack")
        .join(format!("nixpack-e2e_{name}"))
        .join("report.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// Removes images, volumes (and their seeded markers) and containers a
/// test made, pass or fail.
struct Made {
    host: Option<String>,
    images: Vec<String>,
    volumes: Vec<String>,
    containers: Vec<String>,
}

impl Drop for Made {
    fn drop(&mut self) {
        let d = docker(&self.host);
        let rt = rt();
        for c in &self.containers {
            let opts = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .build();
            let _ = rt.block_on(d.remove_container(c, Some(opts)));
        }
        for i in &self.images {
            let opts = bollard::query_parameters::RemoveImageOptionsBuilder::default()
                .force(true)
                .build();
            let _ = rt.block_on(d.remove_image(i, Some(opts), None));
        }
        for v in &self.volumes {
            for name in [v.clone(), format!("{v}.seeded")] {
                let _ = rt.block_on(d.remove_volume(
                    &name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                ));
            }
        }
    }
}

#[test]
fn gc_removes_only_what_a_deleted_project_used() {
    for host in engines() {
        let d = docker(&host);
        assert!(image_exists(&d, BASE), "{BASE} is missing");
        let state = tempfile::tempdir().unwrap();
        let (a_name, b_name) = (unique("gc-a"), unique("gc-b"));
        let a = own_builder_project(&a_name);
        let b = own_builder_project(&b_name);
        ok(nixpack(a.path(), &host, state.path(), &["build"]));
        ok(nixpack(b.path(), &host, state.path(), &["build"]));
        let (ra, rb) = (report(a.path(), &a_name), report(b.path(), &b_name));
        let builder = |r: &serde_json::Value| r["builder"].as_str().unwrap().to_owned();
        let volume = |r: &serde_json::Value| r["store_volume"].as_str().unwrap().to_owned();
        let _made = Made {
            host: host.clone(),
            images: vec![
                builder(&ra),
                builder(&rb),
                format!("nixpack-e2e/{a_name}:latest"),
                format!("nixpack-e2e/{b_name}:latest"),
            ],
            volumes: vec![volume(&ra), volume(&rb)],
            containers: vec![],
        };
        assert_ne!(volume(&ra), volume(&rb));
        assert_ne!(builder(&ra), builder(&rb));
        drop(a);

        let (dry, _) = ok(nixpack(b.path(), &host, state.path(), &["gc", "--dry-run"]));
        assert!(
            dry.contains(&format!("would remove builder image {}", builder(&ra)))
                && dry.contains(&format!("would remove store volume {}", volume(&ra))),
            "{dry}"
        );
        assert!(
            !dry.contains(&builder(&rb)) && !dry.contains(&volume(&rb)),
            "{dry}"
        );
        // Sizes: the builder's from the engine, the volume's from its df.
        let line = dry
            .lines()
            .find(|l| l.contains(&volume(&ra)))
            .unwrap()
            .to_owned();
        assert!(!line.contains("size unknown"), "{line}");
        assert!(dry.contains("nothing was removed"), "{dry}");
        assert!(image_exists(&d, &builder(&ra)) && volume_exists(&d, &volume(&ra)));

        let (done, _) = ok(nixpack(b.path(), &host, state.path(), &["gc"]));
        assert!(
            done.contains(&format!("removed store volume {}", volume(&ra))),
            "{done}"
        );
        assert!(!image_exists(&d, &builder(&ra)), "{done}");
        assert!(!volume_exists(&d, &volume(&ra)), "{done}");
        assert!(!volume_exists(&d, &format!("{}.seeded", volume(&ra))));
        assert!(image_exists(&d, &builder(&rb)) && volume_exists(&d, &volume(&rb)));
        assert!(volume_exists(&d, &format!("{}.seeded", volume(&rb))));

        // Nothing left to collect.
        let (again, _) = ok(nixpack(b.path(), &host, state.path(), &["gc", "--dry-run"]));
        assert!(!again.contains("would remove"), "{again}");
    }
}

#[test]
fn clean_removes_outputs_and_the_image_but_never_one_a_container_uses() {
    for host in engines() {
        let d = docker(&host);
        assert!(image_exists(&d, BASE), "{BASE} is missing");
        let state = tempfile::tempdir().unwrap();
        let name = unique("clean");
        let dir = own_builder_project(&name);
        ok(nixpack(dir.path(), &host, state.path(), &["build"]));
        let r = report(dir.path(), &name);
        let reference = format!("nixpack-e2e/{name}:latest");
        let mut made = Made {
            host: host.clone(),
            images: vec![r["builder"].as_str().unwrap().to_owned(), reference.clone()],
            volumes: vec![r["store_volume"].as_str().unwrap().to_owned()],
            containers: vec![],
        };
        let outputs = dir.path().join(".nixpack");

        let (dry, _) = ok(nixpack(
            dir.path(),
            &host,
            state.path(),
            &["clean", "--dry-run"],
        ));
        assert!(
            dry.contains(&format!("would remove image {reference}")),
            "{dry}"
        );
        assert!(
            dry.contains("would remove") && dry.contains(".nixpack"),
            "{dry}"
        );
        assert!(outputs.exists() && image_exists(&d, &reference));

        // A container made from the image: clean keeps the image, says why.
        let created = rt()
            .block_on(d.create_container(
                None::<bollard::query_parameters::CreateContainerOptions>,
                bollard::models::ContainerCreateBody {
                    image: Some(reference.clone()),
                    cmd: Some(vec!["x".into()]),
                    ..Default::default()
                },
            ))
            .unwrap();
        made.containers.push(created.id.clone());
        let (kept, _) = ok(nixpack(dir.path(), &host, state.path(), &["clean"]));
        assert!(
            kept.contains(&format!("kept image {reference}: a container uses it")),
            "{kept}"
        );
        assert!(image_exists(&d, &reference));
        assert!(!outputs.exists(), "{kept}");
        assert!(
            dir.path().join("nixpack.lock").exists(),
            "the lock is checked in: kept"
        );
        let _ = rt().block_on(
            d.remove_container(
                &created.id,
                Some(
                    bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                        .force(true)
                        .build(),
                ),
            ),
        );

        // Without a record of this project's build, the image is not its to remove.
        let (unknown, _) = ok(nixpack(dir.path(), &host, state.path(), &["clean"]));
        assert!(
            unknown.contains(&format!("kept image {reference}")),
            "{unknown}"
        );
        assert!(image_exists(&d, &reference));

        ok(nixpack(dir.path(), &host, state.path(), &["build"]));
        let (gone, _) = ok(nixpack(dir.path(), &host, state.path(), &["clean"]));
        assert!(
            gone.contains(&format!("removed image {reference}")),
            "{gone}"
        );
        assert!(!image_exists(&d, &reference) && !outputs.exists());
        // An image nixpack did not tag for this project is never touched.
        let _ = rt().block_on(
            d.tag_image(
                BASE,
                Some(
                    bollard::query_parameters::TagImageOptionsBuilder::default()
                        .repo(&format!("nixpack-e2e/{name}"))
                        .tag("latest")
                        .build(),
                ),
            ),
        );
        let (foreign, _) = ok(nixpack(dir.path(), &host, state.path(), &["clean"]));
        assert!(foreign.contains("kept image"), "{foreign}");
        assert!(image_exists(&d, &reference) && image_exists(&d, BASE));
        let _ = rt().block_on(d.remove_image(
            &reference,
            None::<bollard::query_parameters::RemoveImageOptions>,
            None,
        ));
    }
}

/// The python example with `python3` as its entrypoint and no CMD.
fn python_project(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python-http");
    std::fs::copy(from.join("default.nix"), dir.path().join("default.nix")).unwrap();
    let manifest = std::fs::read_to_string(from.join("nixpack.toml"))
        .unwrap()
        .replace(
            "\"nixpack-example/python-http\"",
            &format!("\"nixpack-e2e/{name}\""),
        )
        .replace(
            "entrypoint = [\"/bin/python3\", \"-m\", \"http.server\"]",
            "entrypoint = [\"/bin/python3\"]",
        )
        .replace(
            "cmd = [\"8080\", \"--bind\", \"0.0.0.0\", \"--directory\", \"/usr/local/share/www\"]",
            "cmd = [\"-m\", \"http.server\", \"8080\", \"--bind\", \"0.0.0.0\"]",
        );
    assert!(manifest.contains("entrypoint = [\"/bin/python3\"]"));
    std::fs::write(dir.path().join("nixpack.toml"), manifest).unwrap();
    dir
}

fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

#[test]
fn run_passes_the_exit_code_through_takes_p_and_warns_when_stale() {
    for host in engines() {
        let d = docker(&host);
        assert!(image_exists(&d, BASE), "{BASE} is missing");
        let state = tempfile::tempdir().unwrap();
        let name = unique("run");
        let dir = python_project(&name);
        let reference = format!("nixpack-e2e/{name}:latest");
        let _made = Made {
            host: host.clone(),
            images: vec![reference.clone()],
            volumes: vec![],
            containers: vec![],
        };
        ok(nixpack(dir.path(), &host, state.path(), &["build"]));

        let out = nixpack(
            dir.path(),
            &host,
            state.path(),
            &["run", "--", "-c", "import sys; print('hi'); sys.exit(7)"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(7), "{stderr}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("hi"));
        assert!(!stderr.contains("warning"), "{stderr}");

        // With a terminal on stdin and stdout (script(1) makes one), the
        // container gets one too; the exit code still comes through.
        if Command::new("script").arg("--version").output().is_ok() {
            let inner = format!(
                "{} run -q -- -c 'import sys, os; print(\"tty\", os.isatty(0), os.isatty(1)); sys.exit(3)'",
                env!("CARGO_BIN_EXE_nixpack")
            );
            let mut cmd = Command::new("script");
            cmd.args(["-qec", &inner, "/dev/null"])
                .current_dir(dir.path())
                .env("XDG_STATE_HOME", state.path())
                .stdin(std::process::Stdio::null());
            match &host {
                Some(h) => cmd.env("DOCKER_HOST", h),
                None => cmd.env_remove("DOCKER_HOST"),
            };
            let out = cmd.output().unwrap();
            let seen = String::from_utf8_lossy(&out.stdout).into_owned();
            assert_eq!(out.status.code(), Some(3), "{seen}");
            // The container's terminal echoes what script(1) sends at the
            // end of its input (seen once: a NUL inside the line): compare
            // the printable characters only.
            let printable: String = seen
                .chars()
                .filter(|c| !c.is_control() || *c == '\n')
                .collect();
            assert!(printable.contains("tty True True"), "{seen:?}");
        }

        // The project changed since the build: say so.
        std::thread::sleep(Duration::from_millis(20));
        let nix = dir.path().join("default.nix");
        let text = std::fs::read_to_string(&nix).unwrap();
        std::fs::write(&nix, text).unwrap();
        let out = nixpack(
            dir.path(),
            &host,
            state.path(),
            &["run", "--", "-c", "pass"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("warning:")
                && stderr.contains("default.nix changed since it was built"),
            "{stderr}"
        );

        // -p HOST:CONTAINER moves the published port.
        let port = 19000 + (std::process::id() % 1000) as u16;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixpack"));
        cmd.args(["run", "-p", &format!("{port}:8080")])
            .current_dir(dir.path())
            .env("XDG_STATE_HOME", state.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        match &host {
            Some(h) => cmd.env("DOCKER_HOST", h),
            None => cmd.env_remove("DOCKER_HOST"),
        };
        let mut child = cmd.spawn().unwrap();
        let t = Instant::now();
        let mut answer = None;
        while t.elapsed() < Duration::from_secs(30) && answer.is_none() {
            answer = http_get(port).filter(|b| b.starts_with("HTTP/1.0 200"));
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(answer.is_some(), "nothing answered on 127.0.0.1:{port}");
        assert!(status.success(), "{status}");
        let left: HashMap<&str, Vec<&str>> = HashMap::from([
            ("label", vec!["dev.nixpack.run"]),
            ("ancestor", vec![reference.as_str()]),
        ]);
        let opts = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&left)
            .build();
        assert!(rt()
            .block_on(d.list_containers(Some(opts)))
            .unwrap()
            .is_empty());
    }
}
