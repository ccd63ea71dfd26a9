//! Property tests for the manifest loader: whatever the text, it never
//! panics and returns either a manifest or a diagnostic whose span lies in
//! the text (on character boundaries, so miette can print it). A manifest
//! it accepts always renders, and its scratch Dockerfile holds no line the
//! template did not write.
//!
//! Documents are generated three ways: shaped like a manifest (the real
//! tables and keys, with plausible and implausible values), the same with
//! random edits to the text (syntax errors anywhere), and raw strings.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use miette::{GraphicalReportHandler, GraphicalTheme};
use nixpack::manifest::{Manifest, ManifestError};
use nixpack::render::{LayerEntry, RenderError, Renderer};
use proptest::prelude::*;
use proptest::sample::select;
use toml::Value;

/// A project folder shared by all cases, holding the files the generated
/// manifests may name.
fn root() -> &'static PathBuf {
    static ROOT: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    &ROOT
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let files = [
                ("default.nix", "{}"),
                ("sub/app.nix", "{}"),
                ("vendor/nixpkgs/default.nix", "{}"),
                (
                    "tpl.hbs",
                    "FROM scratch\n{{#each layers}}\nADD {{this.file}} /\n{{/each}}\n",
                ),
                ("bad.hbs", "FROM scratch\n{{#if image.cmd}\n"),
            ];
            for (path, text) in files {
                let path = dir.path().join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            let root = dir.path().to_owned();
            (dir, root)
        })
        .1
}

// ---- values --------------------------------------------------------------------

const KEYS: &[&str] = &[
    "project",
    "builder",
    "nixpkgs",
    "image",
    "name",
    "from",
    "nix-options",
    "store-volume",
    "templates",
    "entrypoint",
    "scratch",
    "url",
    "sha256",
    "path",
    "tag",
    "expression",
    "attr",
    "cmd",
    "ports",
    "env",
    "workdir",
    "user",
    "labels",
    "layers",
    "conventions",
    "tmp",
    "bin",
    "usr-local",
];

const STRINGS: &[&str] = &[
    "",
    "default.nix",
    "./default.nix",
    "sub/app.nix",
    "sub/../default.nix",
    "../x.nix",
    "/etc/hostname",
    "nope.nix",
    "sub",
    "shop/web",
    "Shop",
    "a b",
    "latest",
    "-x",
    "8080/tcp",
    "53/udp",
    "53/icmp",
    "/srv",
    "srv",
    "1000:1000",
    "a\nb",
    "tab\there",
    "\"quoted\"",
    "$HOME",
    "back\\slash",
    "vendor/nixpkgs",
    "tpl.hbs",
    "bad.hbs",
    "missing.hbs",
    "nixos/nix:2.28.3",
    "Nix OS",
    "ünïcödé",
    "🦀",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![4 => select(KEYS).prop_map(String::from), 1 => "[a-zA-Z0-9_.-]{1,8}", 1 => any::<String>()]
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![3 => select(STRINGS).prop_map(String::from), 1 => any::<String>()]
}

/// A string value: mostly one of `good`, sometimes one of `bad`.
fn pick(good: &'static [&'static str], bad: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop_oneof![8 => select(good), 1 => select(bad)]
        .prop_map(|s| Value::String(s.to_owned()))
        .boxed()
}

/// Any TOML value, nested a little.
fn value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        string().prop_map(Value::String),
        prop_oneof![any::<i64>(), -2i64..70_000].prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        any::<bool>().prop_map(Value::Boolean),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Table(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// Mostly a plausible value for the key, sometimes anything.
fn or_any(plausible: BoxedStrategy<Value>) -> BoxedStrategy<Value> {
    prop_oneof![40 => plausible, 1 => value()].boxed()
}

/// A list of strings: any text goes in exec form.
fn strings(options: &'static [&'static str]) -> BoxedStrategy<Value> {
    prop::collection::vec(
        prop_oneof![3 => select(options).prop_map(String::from), 1 => any::<String>()],
        0..4,
    )
    .prop_map(|v| Value::Array(v.into_iter().map(Value::String).collect()))
    .boxed()
}

fn string_map(
    keys: &'static [&'static str],
    bad_keys: &'static [&'static str],
) -> BoxedStrategy<Value> {
    let key = prop_oneof![8 => select(keys), 1 => select(bad_keys)].prop_map(String::from);
    let value = pick(
        &[
            "1",
            "info",
            "say \"hi\"",
            "$HOME and ${PATH}",
            "ends with \\",
            "ünï 🦀",
            "",
        ],
        &["a\nb", "tab\t", "\u{7f}"],
    );
    prop::collection::btree_map(key, value, 0..4)
        .prop_map(|m| Value::Table(m.into_iter().collect()))
        .boxed()
}

fn boolean() -> BoxedStrategy<Value> {
    any::<bool>().prop_map(Value::Boolean).boxed()
}

/// A table whose keys are each present or not (`usual` ones mostly
/// present), plus now and then a key the schema does not know.
fn table(
    usual: &'static [&'static str],
    fields: Vec<(&'static str, BoxedStrategy<Value>)>,
) -> BoxedStrategy<Value> {
    let present: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(k, v)| {
            let odds = if usual.contains(&k) { 0.95 } else { 0.4 };
            prop::option::weighted(odds, v.prop_map(move |v| (k.to_owned(), v))).boxed()
        })
        .collect();
    (present, prop::option::weighted(0.01, (key(), value())))
        .prop_map(|(fields, extra)| {
            Value::Table(fields.into_iter().flatten().chain(extra).collect())
        })
        .boxed()
}

fn image() -> BoxedStrategy<Value> {
    let port = prop_oneof![
        4 => (1i64..65_536).prop_map(Value::Integer),
        1 => prop_oneof![Just(0i64), Just(-1), Just(65_536), Just(70_000)].prop_map(Value::Integer),
        4 => pick(&["8080", "8080/tcp", "53/udp", "9/sctp"], &["53/icmp", "x", "80/", "/tcp", "0/tcp"]),
    ];
    table(
        &["name", "expression"],
        vec![
            ("name", or_any(pick(&["shop/web", "app", "x/y/z", "localhost:5000/app", "a.b_c-d"], &["Shop", "a b", "", "-x", "a//b"]))),
            ("tag", or_any(pick(&["latest", "1.0", "v2_rc-1"], &["-x", "a:b", ""]))),
            ("expression", or_any(pick(&["default.nix", "./default.nix", "sub/app.nix", "sub/../default.nix"], &["../x.nix", "/etc/hostname", "nope.nix", "", "sub"]))),
            ("attr", or_any(pick(&["packages.api", "x"], &["a b", ""]))),
            ("entrypoint", or_any(strings(&["/bin/server", "\"]", "a\nRUN x", "$HOME", "\\"]))),
            ("cmd", or_any(strings(&["--port", "8080", "\\", "'", "CMD [\"x\"]"]))),
            ("ports", or_any(prop::collection::vec(port, 0..4).prop_map(Value::Array).boxed())),
            ("env", or_any(string_map(&["A", "B_1", "PATH", "_x"], &["1X", "a.b", "", "x y"]))),
            ("labels", or_any(string_map(&["org.example.a", "b", "x-y_z/w"], &["", "x y", "a\"b"]))),
            ("workdir", or_any(pick(&["/srv", "/it's \"here\" $HOME", "/"], &["srv", "/a\nb", ""]))),
            ("user", or_any(pick(&["1000", "1000:1000", "app"], &["a b", "", "x\ty"]))),
            ("layers", or_any(prop_oneof![8 => 1i64..=100, 1 => prop_oneof![Just(0i64), Just(101), Just(-1), Just(500)]].prop_map(Value::Integer).boxed())),
            ("conventions", or_any(table(&[], vec![("tmp", boolean()), ("bin", boolean()), ("usr-local", boolean())]))),
        ],
    )
}

/// A document shaped like a manifest.
fn manifest_table() -> BoxedStrategy<Value> {
    let template = || {
        pick(
            &["tpl.hbs", "./tpl.hbs"],
            &["bad.hbs", "missing.hbs", "../x.hbs", ""],
        )
    };
    let nixpkgs = prop_oneof![
        table(
            &["url", "sha256"],
            vec![
                (
                    "url",
                    pick(&["https://example.org/nixpkgs.tar.gz"], &["a\nb"])
                ),
                (
                    "sha256",
                    pick(
                        &["0000000000000000000000000000000000000000000000000000000000000000"],
                        &["abc", ""]
                    )
                ),
            ],
        ),
        table(
            &["path"],
            vec![(
                "path",
                pick(
                    &["vendor/nixpkgs", "./vendor/nixpkgs"],
                    &["default.nix", "../up", ""]
                )
            )]
        ),
        table(
            &[],
            vec![("url", value()), ("sha256", value()), ("path", value())]
        ),
    ];
    table(
        &["project", "image"],
        vec![
            ("project", or_any(table(&["name"], vec![("name", or_any(pick(&["shop", "My Shop", "ünï \"q\" $x"], &["", "a\nb", " "])))]))),
            (
                "builder",
                or_any(table(
                    &[],
                    vec![
                        ("from", or_any(pick(&["nixos/nix:2.28.3", "nixpack-base:bookworm", "localhost:5000/nix@sha256:0000000000000000000000000000000000000000000000000000000000000000"], &["Nix OS", "a@sha256:x", ""]))),
                        ("nix-options", or_any(string_map(&["max-jobs", "cores", "keep-going"], &["bad key", "", "a=b"]))),
                        ("store-volume", or_any(pick(&["nix-store", "a.b_c"], &["bad/volume", "", "-x"]))),
                        ("templates", or_any(table(&[], vec![("builder", template()), ("entrypoint", template()), ("scratch", template())]))),
                    ],
                )),
            ),
            ("nixpkgs", or_any(nixpkgs.boxed())),
            ("image", or_any(prop::collection::vec(image(), 1..3).prop_map(Value::Array).boxed())),
        ],
    )
}

fn to_text(doc: &Value) -> String {
    match doc {
        Value::Table(t) => toml::to_string(t).unwrap_or_default(),
        other => other.to_string(),
    }
}

/// Edits that break the syntax anywhere: cut the text short, or replace a
/// stretch of it with random characters.
fn mutate(text: &str, at: usize, cut: usize, insert: &str, truncate: bool) -> String {
    let chars: Vec<char> = text.chars().collect();
    let at = if chars.is_empty() {
        0
    } else {
        at % (chars.len() + 1)
    };
    if truncate {
        return chars[..at].iter().collect();
    }
    let end = (at + cut).min(chars.len());
    chars[..at]
        .iter()
        .copied()
        .chain(insert.chars())
        .chain(chars[end..].iter().copied())
        .collect()
}

// ---- the property ------------------------------------------------------------------

fn check(text: &str) -> Result<(), TestCaseError> {
    let path = root().join("nixpack.toml");
    match Manifest::from_str(text, &path) {
        Ok(m) => accepted(&m),
        Err(e) => {
            let ManifestError::Invalid {
                src, span, message, ..
            } = &e
            else {
                return Err(TestCaseError::fail(format!(
                    "from_str gave a non-diagnostic error: {e:?}"
                )));
            };
            prop_assert_eq!(src.inner().as_str(), text);
            let (start, end) = (span.offset(), span.offset() + span.len());
            prop_assert!(
                end <= text.len(),
                "span {start}..{end} past the end ({}) for {message}",
                text.len()
            );
            prop_assert!(
                text.is_char_boundary(start) && text.is_char_boundary(end),
                "span {start}..{end} splits a character"
            );
            prop_assert!(!message.is_empty());
            let line = e.line().expect("an Invalid error has a line");
            prop_assert!(line >= 1 && line <= text.lines().count().max(1) + 1);
            let mut shown = String::new();
            GraphicalReportHandler::new_themed(GraphicalTheme::unicode_nocolor())
                .with_width(100_000)
                .render_report(&mut shown, &e)
                .map_err(|err| TestCaseError::fail(format!("miette cannot print it: {err}")))?;
            prop_assert!(shown.contains(message.lines().next().unwrap_or("")));
            Ok(())
        }
    }
}

/// A manifest that loads renders, and no value adds a line to the
/// Dockerfile. Only an override template may fail to render, and then with
/// a diagnostic that points into it.
fn accepted(m: &Manifest) -> Result<(), TestCaseError> {
    prop_assert!(!m.images.is_empty());
    let overridden = m.builder.templates != Default::default();
    let check_render = |r: Result<String, RenderError>| -> Result<Option<String>, TestCaseError> {
        match r {
            Ok(text) => Ok(Some(text)),
            Err(RenderError::Template { src, span, .. }) if overridden => {
                if let Some(span) = span {
                    prop_assert!(span.offset() + span.len() <= src.inner().len());
                }
                Ok(None)
            }
            Err(e) => Err(TestCaseError::fail(format!("rendering failed: {e:?}"))),
        }
    };
    let renderer = match Renderer::new(m) {
        Ok(r) => r,
        Err(e) => return check_render(Err(e)).map(|_| ()),
    };
    check_render(renderer.builder_dockerfile())?;
    check_render(renderer.entrypoint())?;
    let layers = [
        LayerEntry {
            file: "layers/layer-a.tar".into(),
            paths: 2,
            bytes: 5_000_000,
        },
        LayerEntry {
            file: "layers/conventions-b.tar".into(),
            paths: 0,
            bytes: 0,
        },
    ];
    for image in &m.images {
        let Some(scratch) =
            check_render(renderer.scratch_dockerfile(image, &layers, &BTreeMap::new()))?
        else {
            continue;
        };
        if m.builder.templates.scratch.is_none() {
            let known = common::SCRATCH_INSTRUCTIONS;
            for line in scratch
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
            {
                prop_assert!(
                    known.iter().any(|k| line.starts_with(k)),
                    "unexpected line `{}` in\n{}",
                    line,
                    scratch
                );
                prop_assert!(!line.ends_with('\\'), "a continued line `{}`", line);
            }
            // Read back as Docker would (with nixpack's own reader, which
            // the native image assembly uses), every value is as written.
            let recipe = nixpack::dockerfile::parse(&scratch)
                .map_err(|e| TestCaseError::fail(format!("{e:?} in\n{scratch}")))?;
            let env: BTreeMap<String, String> = recipe.env.into_iter().collect();
            prop_assert_eq!(&env, &image.env);
            prop_assert_eq!(&recipe.labels, &image.labels);
            prop_assert_eq!(&recipe.workdir, &image.workdir);
            prop_assert_eq!(&recipe.user, &image.user);
            let set = |v: &Option<Vec<String>>| v.clone().filter(|v| !v.is_empty());
            prop_assert_eq!(&recipe.entrypoint, &set(&image.entrypoint));
            prop_assert_eq!(&recipe.cmd, &set(&image.cmd));
            let ports: Vec<String> = image.ports.iter().map(ToString::to_string).collect();
            prop_assert_eq!(&recipe.exposed, &ports);
            prop_assert_eq!(recipe.layers.len(), layers.len());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, ..ProptestConfig::default() })]

    #[test]
    fn shaped_documents(doc in manifest_table()) {
        check(&to_text(&doc))?;
    }

    #[test]
    fn shaped_documents_with_random_edits(
        doc in manifest_table(),
        at in any::<usize>(),
        cut in 0usize..8,
        insert in prop_oneof!["[\\[\\]{}=\"'.,#\\n\\\\ a-z0-9]{0,6}", any::<String>()],
        truncate in any::<bool>(),
    ) {
        check(&mutate(&to_text(&doc), at, cut, &insert, truncate))?;
    }

    #[test]
    fn raw_strings(text in prop_oneof![any::<String>(), "[\\[\\]{}=\"'.,#\\n a-z0-9_-]{0,120}"]) {
        check(&text)?;
    }
}

/// The generators do reach both outcomes: a property that only ever sees
/// errors would prove little about accepted manifests.
#[test]
fn the_generator_reaches_valid_and_invalid_manifests() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = manifest_table();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..600 {
        let text = to_text(&strategy.new_tree(&mut runner).unwrap().current());
        match Manifest::from_str(&text, &root().join("nixpack.toml")) {
            Ok(_) => ok += 1,
            Err(e) => {
                if std::env::var_os("FUZZ_DEBUG").is_some() {
                    eprintln!("{text}\n--> {e}\n");
                }
                err += 1
            }
        }
    }
    assert!(ok >= 5, "only {ok} of 600 generated manifests were valid");
    assert!(
        err >= 100,
        "only {err} of 600 generated manifests were invalid"
    );
}
