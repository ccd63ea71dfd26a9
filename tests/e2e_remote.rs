//! End-to-end tests of the ways to reach an engine other than the local
//! socket, each against a real server started by the test on 127.0.0.1:
//!
//! - `DOCKER_HOST=ssh://root@127.0.0.1:PORT`: Debian's `sshd` with its own
//!   config, host key and authorized key, in front of this machine's engine;
//! - `DOCKER_HOST=tcp://127.0.0.1:PORT` with `DOCKER_TLS_VERIFY=1`: `socat`
//!   terminating TLS (with client certificates) in front of the engine's
//!   socket, certificates made by `openssl`;
//! - a docker context naming the second engine of `scripts/test-engine`
//!   (Docker 26 with the containerd image store).
//!
//! A build through a remote transport must give the DiffIDs and manifest
//! digest of a build over the local socket. They need `nixpack-base:bookworm`
//! in both engines, the second engine, and `scripts/install-test-tools`
//! (openssh-server, socat); `scripts/test` provides all of them.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveImageOptionsBuilder};
use common::squash;

const BASE: &str = "nixpack-base:bookworm";
const LOCAL_SOCKET: &str = "/var/run/docker.sock";

/// The socket of the containerd-store engine of `scripts/test-engine`
/// (`NIXPACK_TEST_CONTAINERD_HOST`, which `scripts/test` exports).
fn test_engine_socket() -> String {
    std::env::var("NIXPACK_TEST_CONTAINERD_HOST")
        .ok()
        .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
        .unwrap_or_else(|| "/run/nixpack-test/docker.sock".to_owned())
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("nixpack-e2e/{prefix}-{}-{nanos}", std::process::id())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A client for the engine at `socket`, checked by the tests (never the
/// client under test).
fn engine(socket: &str) -> bollard::Docker {
    rt().block_on(async {
        bollard::Docker::connect_with_unix(socket, 120, bollard::API_DEFAULT_VERSION)
            .unwrap()
            .negotiate_version()
            .await
            .unwrap()
    })
}

fn has_image(socket: &str, reference: &str) -> bool {
    rt().block_on(engine(socket).inspect_image(reference))
        .is_ok()
}

fn require_base(socket: &str) {
    assert!(
        has_image(socket, BASE),
        "the builder base {BASE} is missing in the engine at {socket}: run scripts/test \
         (scripts/make-builder-base, scripts/test-engine)"
    );
}

fn require_tool(path: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: run scripts/install-test-tools"
    );
}

/// Containers labelled with the image's name, in the engine at `socket`.
fn containers_of(socket: &str, image: &str) -> Vec<String> {
    let label = format!("dev.nixpack.image={image}");
    let opts = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&HashMap::from([("label", vec![label.as_str()])]))
        .build();
    rt().block_on(engine(socket).list_containers(Some(opts)))
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// Removes the image from both engines when the test ends, pass or fail.
struct ImageGuard(String);

impl Drop for ImageGuard {
    fn drop(&mut self) {
        for socket in [LOCAL_SOCKET, &test_engine_socket()] {
            if !Path::new(socket).exists() {
                continue;
            }
            let opts = RemoveImageOptionsBuilder::default().force(true).build();
            let _ = rt().block_on(engine(socket).remove_image(&self.0, Some(opts), None));
        }
    }
}

/// A project building one small image `name` whose store path is unique
/// per `nonce`.
fn project(name: &str, nonce: &str) -> tempfile::TempDir {
    let manifest = format!(
        "[project]\nname = \"t\"\n[builder]\nfrom = \"{BASE}\"\n[[image]]\nname = \"{name}\"\nexpression = \"default.nix\"\n"
    );
    let expression = format!(
        r#"builtins.derivation {{
  name = "remote";
  system = builtins.currentSystem;
  builder = "/bin/sh";
  args = [ "-c" "/bin/mkdir -p $out/bin $out/share; echo {nonce} > $out/share/nonce; echo '#!/bin/sh' > $out/bin/remote" ];
}}
"#
    );
    common::project(&[("nixpack.toml", &manifest), ("default.nix", &expression)])
}

/// `nixpack -v build` in `dir` with no Docker settings but `env`, and a
/// `HOME` of its own (no `~/.docker` of the machine's).
fn nixpack_build(dir: &Path, home: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixpack"));
    cmd.args(["-v", "build"])
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .env("HOME", home);
    for var in [
        "DOCKER_HOST",
        "DOCKER_CONTEXT",
        "DOCKER_CONFIG",
        "DOCKER_TLS_VERIFY",
        "DOCKER_CERT_PATH",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    cmd.output().expect("nixpack runs")
}

fn build_ok(dir: &Path, home: &Path, env: &[(&str, &str)]) -> Output {
    let out = nixpack_build(dir, home, env);
    assert!(
        out.status.success(),
        "build with {env:?} failed:\n{}",
        text(&out.stderr)
    );
    out
}

/// The identity of a build: its layers' DiffIDs and the manifest digest
/// (from `.nixpack/<image>/report.json`).
fn identity(dir: &Path, name: &str) -> (Vec<String>, String) {
    let report = dir
        .join(".nixpack")
        .join(name.replace('/', "_"))
        .join("report.json");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let diff_ids = report["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect();
    (
        diff_ids,
        report["manifest_digest"].as_str().unwrap().to_owned(),
    )
}

/// A TCP port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server process the test started; killed (by its pid) when dropped.
struct Server {
    child: Child,
    log: PathBuf,
}

impl Server {
    /// Starts `cmd` with its output in `log`, and waits until it accepts
    /// connections on `port`.
    fn start(mut cmd: Command, log: PathBuf, port: u16) -> Server {
        let out = std::fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the server starts");
        let server = Server { child, log };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nothing listens on 127.0.0.1:{port}:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        text(&out.stderr)
    );
}

/// An sshd on 127.0.0.1 that lets in root with a key the test made, and an
/// ssh client set up to use that key and to trust only that sshd's host key.
struct Ssh {
    _dir: tempfile::TempDir,
    server: Server,
    port: u16,
    /// Holds an `ssh` that is `/usr/bin/ssh -F <the test's config>`: put it
    /// first on PATH. (OpenSSH finds `~/.ssh` through the password
    /// database, not `$HOME`, so this is how a test gives it a config.)
    bin: PathBuf,
}

impl Ssh {
    fn start() -> Ssh {
        require_tool("/usr/sbin/sshd");
        require_tool("/usr/bin/ssh");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for key in ["host_key", "client_key"] {
            run(Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", "nixpack-e2e", "-f"])
                .arg(d.join(key)));
        }
        std::fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let port = free_port();
        let sshd_config = d.join("sshd_config");
        std::fs::write(
            &sshd_config,
            format!(
                "ListenAddress 127.0.0.1\nPort {port}\nHostKey {d}/host_key\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nAllowUsers root\n",
                d = d.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation folder (Debian's service makes it).
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut sshd = Command::new("/usr/sbin/sshd");
        sshd.args(["-D", "-e", "-f"]).arg(&sshd_config);
        let server = Server::start(sshd, d.join("sshd.log"), port);

        let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
        std::fs::write(
            d.join("known_hosts"),
            format!("[127.0.0.1]:{port} {host_key}"),
        )
        .unwrap();
        let ssh_config = d.join("ssh_config");
        std::fs::write(
            &ssh_config,
            format!(
                "Host 127.0.0.1\n  IdentityFile {d}/client_key\n  IdentitiesOnly yes\n  \
                 UserKnownHostsFile {d}/known_hosts\n  StrictHostKeyChecking yes\n  BatchMode yes\n",
                d = d.display()
            ),
        )
        .unwrap();
        let bin = d.join("bin");
        std::fs::create_dir(&bin).unwrap();
        let wrapper = bin.join("ssh");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\nexec /usr/bin/ssh -F {} \"$@\"\n",
                ssh_config.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
        Ssh {
            _dir: dir,
            server,
            port,
            bin,
        }
    }

    /// PATH with the test's `ssh` first.
    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }
}

#[test]
fn a_build_over_ssh_gives_the_diff_ids_of_a_local_build_and_leaves_no_container() {
    require_base(LOCAL_SOCKET);
    let ssh = Ssh::start();
    let home = tempfile::tempdir().unwrap();
    let name = unique("ssh");
    let _guard = ImageGuard(name.clone());
    let nonce = name.clone();

    let local = project(&name, &nonce);
    build_ok(local.path(), home.path(), &[]);

    let remote = project(&name, &nonce);
    let host = format!("ssh://root@127.0.0.1:{}", ssh.port);
    let path = ssh.path();
    let out = build_ok(
        remote.path(),
        home.path(),
        &[("DOCKER_HOST", &host), ("PATH", &path)],
    );
    let stderr = squash(&text(&out.stderr));
    assert!(
        stderr.contains(&format!("engine: {host} (chosen by DOCKER_HOST)")),
        "-v says which engine and why:\n{stderr}"
    );
    assert!(
        ssh.server.log().contains("Accepted publickey for root"),
        "the build went through the test's sshd:\n{}",
        ssh.server.log()
    );
    assert_eq!(
        identity(remote.path(), &name),
        identity(local.path(), &name),
        "the same DiffIDs and manifest digest over ssh as over the local socket"
    );
    assert!(
        containers_of(LOCAL_SOCKET, &name).is_empty(),
        "a build over ssh leaves no container behind"
    );
}

#[test]
fn an_ssh_engine_that_refuses_the_key_is_one_clear_error_with_what_ssh_said() {
    let ssh = Ssh::start();
    let home = tempfile::tempdir().unwrap();
    let dir = project("x", "x");
    // The key is right but the user is not allowed: sshd refuses.
    let host = format!("ssh://nobody@127.0.0.1:{}", ssh.port);
    let path = ssh.path();
    let out = nixpack_build(
        dir.path(),
        home.path(),
        &[("DOCKER_HOST", &host), ("PATH", &path)],
    );
    let err = squash(&text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the Docker Engine at {host} (chosen by DOCKER_HOST)"
        )),
        "{err}"
    );
    assert!(err.contains("Permission denied"), "ssh's own words:\n{err}");
    assert!(
        err.contains(&format!(
            "-l nobody -p {} -- 127.0.0.1 docker system dial-stdio",
            ssh.port
        )),
        "the help shows the ssh command to try:\n{err}"
    );
    assert_eq!(err.matches('×').count(), 1, "one error:\n{err}");
}

/// A CA and the certificates it signs, made with the `openssl` CLI.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    /// A CA, a server certificate for 127.0.0.1 and a client certificate,
    /// named as DOCKER_CERT_PATH wants them: `ca.pem`, `cert.pem`,
    /// `key.pem` (the client's), plus `server-cert.pem`, `server-key.pem`.
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Another CA has another name.
        let ca_name = format!(
            "/CN=nixpack e2e CA {}",
            d.file_name().unwrap().to_string_lossy()
        );
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        run(Command::new("openssl")
            .args(["req", "-x509"])
            .args(ec)
            .args(["-days", "2", "-subj", &ca_name, "-keyout"])
            .arg(d.join("ca-key.pem"))
            .arg("-out")
            .arg(d.join("ca.pem")));
        for (who, subject, ext) in [
            (
                "server",
                "/CN=127.0.0.1",
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=nixpack e2e client",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let (key, cert) = match who {
                "server" => ("server-key.pem", "server-cert.pem"),
                _ => ("key.pem", "cert.pem"),
            };
            let csr = d.join(format!("{who}.csr"));
            let extfile = d.join(format!("{who}.ext"));
            std::fs::write(&extfile, ext).unwrap();
            run(Command::new("openssl")
                .arg("req")
                .args(ec)
                .args(["-subj", subject, "-keyout"])
                .arg(d.join(key))
                .arg("-out")
                .arg(&csr));
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial", "-in"])
                .arg(&csr)
                .arg("-CA")
                .arg(d.join("ca.pem"))
                .arg("-CAkey")
                .arg(d.join("ca-key.pem"))
                .arg("-extfile")
                .arg(&extfile)
                .arg("-out")
                .arg(d.join(cert)));
        }
        Pki { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// socat terminating TLS on 127.0.0.1 in front of the engine's socket: it
/// presents the server certificate and accepts only clients with a
/// certificate from the CA.
fn tls_terminator(pki: &Pki) -> (Server, u16) {
    require_tool("/usr/bin/socat");
    let port = free_port();
    let d = pki.path();
    // socat sets no TLS session id context, and OpenSSL then fails (rather
    // than declines) every resumed session when client certificates are
    // checked; rustls resumes from the second connection on. Without
    // session tickets a resumption finds nothing in the forked child's
    // cache and falls back to a full handshake. (Docker's own TLS listener
    // resumes sessions fine.)
    let openssl_cnf = d.join("openssl.cnf");
    std::fs::write(
        &openssl_cnf,
        "openssl_conf = conf\n[conf]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n\
         [sys]\nOptions = -SessionTicket\n",
    )
    .unwrap();
    let mut socat = Command::new("/usr/bin/socat");
    socat
        .env("OPENSSL_CONF", &openssl_cnf)
        .arg(format!(
            "OPENSSL-LISTEN:{port},bind=127.0.0.1,cert={d}/server-cert.pem,key={d}/server-key.pem,\
             cafile={d}/ca.pem,verify=1,reuseaddr,fork",
            d = d.display()
        ))
        .arg(format!("UNIX-CONNECT:{LOCAL_SOCKET}"));
    let server = Server::start(socat, d.join("socat.log"), port);
    (server, port)
}

#[test]
fn a_build_over_tcp_with_tls_gives_the_diff_ids_of_a_local_build() {
    require_base(LOCAL_SOCKET);
    let pki = Pki::new();
    let (_socat, port) = tls_terminator(&pki);
    let home = tempfile::tempdir().unwrap();
    let name = unique("tls");
    let _guard = ImageGuard(name.clone());
    let nonce = name.clone();

    let local = project(&name, &nonce);
    build_ok(local.path(), home.path(), &[]);

    let remote = project(&name, &nonce);
    let host = format!("tcp://127.0.0.1:{port}");
    let certs = pki.path().display().to_string();
    let out = build_ok(
        remote.path(),
        home.path(),
        &[
            ("DOCKER_HOST", &host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &certs),
        ],
    );
    let stderr = squash(&text(&out.stderr));
    assert!(
        stderr.contains(&format!(
            "engine: {host} (chosen by DOCKER_HOST), TLS verified against {certs}/ca.pem"
        )),
        "-v says which engine and why:\n{stderr}"
    );
    assert_eq!(
        identity(remote.path(), &name),
        identity(local.path(), &name),
        "the same DiffIDs and manifest digest over TLS as over the local socket"
    );
    assert!(containers_of(LOCAL_SOCKET, &name).is_empty());
}

#[test]
fn a_tls_engine_whose_certificate_another_ca_signed_is_one_clear_error() {
    let pki = Pki::new();
    let (_socat, port) = tls_terminator(&pki);
    // Another CA, with a client certificate of its own: the engine's
    // certificate does not chain to this ca.pem.
    let other = Pki::new();
    let home = tempfile::tempdir().unwrap();
    let dir = project("x", "x");
    let host = format!("tcp://127.0.0.1:{port}");
    let certs = other.path().display().to_string();
    let out = nixpack_build(
        dir.path(),
        home.path(),
        &[
            ("DOCKER_HOST", &host),
            ("DOCKER_TLS_VERIFY", "1"),
            ("DOCKER_CERT_PATH", &certs),
        ],
    );
    let err = squash(&text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches('×').count(), 1, "one error:\n{err}");
    assert!(
        err.contains(&format!(
            "cannot reach the Docker Engine at {host} (chosen by DOCKER_HOST)"
        )),
        "{err}"
    );
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "why, in TLS's words:\n{err}"
    );
    assert!(
        err.contains(&format!("check that the engine listens there with TLS, that {certs}/ca.pem is the CA that signed its certificate")),
        "what to check:\n{err}"
    );
    assert!(err.contains("DOCKER_CERT_PATH"), "{err}");
}

/// A docker CLI config folder with one context `name` for the engine at
/// `socket`, written as `docker context create NAME --docker host=…` does.
fn docker_config_with_context(name: &str, socket: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let id = nixpack::endpoint::context_dir_name(name);
    let meta = dir.path().join("contexts/meta").join(id);
    std::fs::create_dir_all(&meta).unwrap();
    std::fs::write(
        meta.join("meta.json"),
        format!(
            r#"{{"Name":"{name}","Metadata":{{"Description":"nixpack e2e"}},"Endpoints":{{"docker":{{"Host":"unix://{socket}","SkipTLSVerify":false}}}}}}"#
        ),
    )
    .unwrap();
    dir
}

#[test]
fn a_docker_context_builds_on_the_engine_it_names() {
    let test_engine = test_engine_socket();
    assert!(
        Path::new(&test_engine).exists(),
        "the containerd-store engine is not running: run scripts/test-engine (scripts/test does)"
    );
    require_base(&test_engine);
    let home = tempfile::tempdir().unwrap();
    let name = unique("context");
    let _guard = ImageGuard(name.clone());
    let reference = format!("{name}:latest");
    let context = "nixpack-e2e-containerd";
    let config = docker_config_with_context(context, &test_engine);
    let config_dir = config.path().display().to_string();

    // Selected by DOCKER_CONTEXT.
    let dir = project(&name, &name);
    let out = build_ok(
        dir.path(),
        home.path(),
        &[("DOCKER_CONFIG", &config_dir), ("DOCKER_CONTEXT", context)],
    );
    let stderr = squash(&text(&out.stderr));
    assert!(
        stderr.contains(&format!(
            "engine: unix://{test_engine} (chosen by docker context `{context}`, from DOCKER_CONTEXT)"
        )),
        "{stderr}"
    );
    assert!(
        has_image(&test_engine, &reference),
        "built in the context's engine"
    );
    assert!(
        !has_image(LOCAL_SOCKET, &reference),
        "not in the default one"
    );
    assert!(containers_of(&test_engine, &name).is_empty());

    // Selected by currentContext, in a fresh project so that it builds again.
    let opts = RemoveImageOptionsBuilder::default().force(true).build();
    rt().block_on(engine(&test_engine).remove_image(&reference, Some(opts), None))
        .unwrap();
    let config_json = config.path().join("config.json");
    std::fs::write(
        &config_json,
        format!(r#"{{"auths":{{}},"currentContext":"{context}"}}"#),
    )
    .unwrap();
    let dir = project(&name, &name);
    let out = build_ok(dir.path(), home.path(), &[("DOCKER_CONFIG", &config_dir)]);
    let stderr = squash(&text(&out.stderr));
    assert!(
        stderr.contains(&format!(
            "(chosen by docker context `{context}`, from currentContext in {})",
            config_json.display()
        )),
        "{stderr}"
    );
    assert!(
        has_image(&test_engine, &reference),
        "built in the context's engine"
    );
    assert!(
        !has_image(LOCAL_SOCKET, &reference),
        "not in the default one"
    );

    // DOCKER_HOST beats both.
    let out = nixpack_build(
        dir.path(),
        home.path(),
        &[
            ("DOCKER_CONFIG", &config_dir),
            ("DOCKER_CONTEXT", context),
            ("DOCKER_HOST", "unix:///tmp/nixpack-no-such-docker.sock"),
        ],
    );
    let err = squash(&text(&out.stderr));
    assert!(
        err.contains("cannot reach the Docker Engine at unix:///tmp/nixpack-no-such-docker.sock (chosen by DOCKER_HOST)"),
        "{err}"
    );
}

#[test]
fn a_missing_docker_context_is_one_clear_error_naming_it_and_the_file() {
    let home = tempfile::tempdir().unwrap();
    let config = tempfile::tempdir().unwrap();
    let config_json = config.path().join("config.json");
    std::fs::write(&config_json, r#"{"currentContext":"gone"}"#).unwrap();
    let dir = project("x", "x");
    let out = nixpack_build(
        dir.path(),
        home.path(),
        &[("DOCKER_CONFIG", &config.path().display().to_string())],
    );
    let err = squash(&text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{err}");
    let meta = config
        .path()
        .join("contexts/meta")
        .join(nixpack::endpoint::context_dir_name("gone"))
        .join("meta.json");
    assert!(
        err.contains(&format!(
            "docker context `gone` (from currentContext in {}) does not exist: there is no ",
            config_json.display(),
        )),
        "{err}"
    );
    // miette breaks a long path at its slashes.
    assert!(
        err.replace(' ', "")
            .contains(&meta.display().to_string().replace(' ', "")),
        "the file it looked for:\n{err}"
    );
    assert!(err.contains("docker context ls"), "{err}");
}
