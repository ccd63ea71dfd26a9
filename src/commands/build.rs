//! `nixpack build`: every stage, for every selected image, `-j` at a time.
//!
//! The builder image and the store volume are shared and made once; then
//! each image runs nix → layers → image. Ctrl-C removes every container
//! nixpack started before exiting; a failed image never gets its tag.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cli::{BuildArgs, Output};
use crate::engine::Engine;
use crate::error::Error;
use crate::lock::{self, Lock, LockedBuilder, LockedImage, LOCK_NAME};
use crate::manifest::{Image, Manifest};
use crate::render::Renderer;
use crate::stages::{self, builder::BuilderImage, Ctx};
use crate::ui::Ui;

/// What one image's build produced, for the summary and the report.
pub struct Outcome {
    /// The tagged image.
    pub built: stages::image::Built,
    /// Store paths in the closure.
    pub store_paths: usize,
    /// Wall time per stage: nix, layers, image.
    pub times: [(&'static str, Duration); 3],
    /// The closure's result and hash, for the lock.
    pub result: String,
    /// sha256 of the canonical closure.
    pub closure_hash: String,
    /// Whether nix-build ran.
    pub nix_ran: bool,
    /// Closure layers written.
    pub layers_written: usize,
}

/// Runs `nixpack build`.
pub fn run(manifest: Manifest, args: &BuildArgs, ui: Ui) -> Result<(), Error> {
    let o = &args.push_options;
    if !args.push && (o.insecure || o.username.is_some() || o.compression != Default::default()) {
        return Err(Error::msg(
            "--insecure, --username and --compression say how to push",
            "add --push to push the images once they are built",
        ));
    }
    // Read before the build: stdin is the password, not something to wait for later.
    let credentials = if args.push {
        super::push::credentials(o)?
    } else {
        None
    };
    super::runtime()?.block_on(async {
        let engine = Engine::connect().await.map_err(Error::user)?;
        let work = async {
            build(&engine, &manifest, args, &ui).await?;
            engine.cleanup.run(&engine).await;
            if args.push {
                let images = manifest
                    .select(&args.images)
                    .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?;
                super::push::push_all(&manifest, &images, &[], o, credentials, &ui).await?;
            }
            Ok(())
        };
        tokio::select! {
            r = work => {
                engine.cleanup.run(&engine).await;
                r
            }
            _ = crate::ui::shutdown_signal() => {
                ui.log("interrupted: removing the containers nixpack started");
                engine.cleanup.run(&engine).await;
                Err(Error::interrupted())
            }
        }
    })
}

async fn build(
    engine: &Engine,
    manifest: &Manifest,
    args: &BuildArgs,
    ui: &Ui,
) -> Result<(), Error> {
    let started = Instant::now();
    let images = manifest
        .select(&args.images)
        .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?;
    let renderer = Renderer::new(manifest)?;
    let ctx = Ctx {
        engine,
        manifest,
        renderer: &renderer,
        ui,
    };
    let outputs = plan_outputs(&args.outputs, &images)?;
    let (builder, _built) = stages::builder::ensure(&ctx).await?;
    let volume = stages::store::ensure(&ctx, &builder).await?;

    let results: Vec<(String, Result<Outcome, Error>)> = futures_util::stream::iter(images)
        .map(|image| {
            let ctx = &ctx;
            let builder = &builder;
            let volume = &volume;
            let outputs = &outputs;
            async move {
                (
                    image.reference(),
                    build_one(ctx, builder, volume, image, !args.locked, outputs).await,
                )
            }
        })
        .buffer_unordered(usize::from(args.jobs))
        .collect()
        .await;

    ui.line(&format!(
        "{:<40} {:>10} {:>6} {:>8}  {}",
        "IMAGE", "SIZE", "PATHS", "TIME", "STATUS"
    ));
    let mut done = Vec::new();
    let mut failures = Vec::new();
    for (reference, r) in results {
        match r {
            Ok(o) => {
                let total: Duration = o.times.iter().map(|(_, d)| *d).sum();
                let status = if o.built.built {
                    format!(
                        "built ({} layer(s) written{})",
                        o.layers_written,
                        if o.nix_ran { ", nix-build ran" } else { "" }
                    )
                } else {
                    "unchanged".to_owned()
                };
                ui.line(&format!(
                    "{:<40} {:>10} {:>6} {:>7.1}s  {status}",
                    reference,
                    stages::nix::human_bytes(o.built.size),
                    o.store_paths,
                    total.as_secs_f64()
                ));
                done.push((reference, o));
            }
            Err(e) => {
                ui.line(&format!(
                    "{reference:<40} {:>10} {:>6} {:>8}  FAILED",
                    "-", "-", "-"
                ));
                failures.push((reference, e));
            }
        }
    }
    ui.log(&format!("done in {:.1}s", started.elapsed().as_secs_f64()));
    match failures.len() {
        0 => {
            finish_lock(
                engine,
                manifest,
                &builder,
                &locked_images(&done, manifest),
                args.locked,
                ui,
            )
            .await
        }
        1 => Err(failures.pop().expect("one").1),
        n => {
            for (reference, e) in &failures {
                eprintln!("{reference}: {:?}", e.report());
            }
            Err(Error::msg(
                format!("{n} images failed"),
                "see the errors above",
            ))
        }
    }
}

async fn build_one(
    ctx: &Ctx<'_>,
    builder: &BuilderImage,
    store: &stages::store::Store,
    image: &Image,
    tag: bool,
    outputs: &[(String, Output)],
) -> Result<Outcome, Error> {
    let dir = crate::outputs::image_dir(ctx.manifest, image);
    let _turn = crate::outputs::lock_file(&dir.join(".lock"), || {
        ctx.ui.log(&format!(
            "{}: waiting for another nixpack building it",
            image.reference()
        ))
    })
    .await
    .map_err(|e| Error::internal("locking the output folder", e))?;
    let t = Instant::now();
    let volume = store.name.as_str();
    let (closure, nix_ran) = stages::nix::run(ctx, builder, store, image, &dir).await?;
    let nix_time = t.elapsed();
    let t = Instant::now();
    let layers = stages::layers::prepare(image, &dir, &closure)?;
    // The image stage streams each layer to the engine as soon as it is
    // written, so the two stages overlap: for a 1 GiB closure on a local
    // engine, 4.7 s against 5.1 s one after the other. (With the layers
    // streamed through nixpack instead of a bind mount, all of it on the
    // same 2 cores, the overlap measured slower: 10.2 s against 6.4 s.)
    let ready = std::sync::Arc::new(stages::layers::Ready::default());
    let produce = async {
        let r =
            stages::layers::produce(ctx, builder, volume, image, &closure, &layers, &ready).await;
        (r, t.elapsed())
    };
    let assemble = stages::image::run(ctx, image, &dir, &closure, &layers, &ready);
    let ((written, layers_time), built) = tokio::join!(produce, assemble);
    let image_time = t.elapsed();
    // A layer failure explains an image failure, not the other way round;
    // an image made over layers that then failed is not kept.
    let layers_written = match written {
        Ok(n) => n,
        Err(e) => {
            if let Some(b) = built.as_ref().ok().filter(|b| b.built) {
                let _ = ctx.engine.remove_image(&b.id).await;
            }
            return Err(e);
        }
    };
    let built = built?;
    // Every stage succeeded: now the tag may move.
    if tag && built.built {
        if let Err(e) = ctx
            .engine
            .tag(&built.id, image.name.as_str(), image.tag.as_str())
            .await
        {
            let _ = ctx.engine.remove_image(&built.id).await;
            return Err(Error::user(e));
        }
    }
    for (name, output) in outputs.iter().filter(|(n, _)| *n == image.name.to_string()) {
        write_output(ctx, image, &built, output).map_err(|e| {
            Error::msg(
                format!("writing `{name}` to {output:?}: {e}"),
                "check the path: nixpack creates the folder or file (and its parents) and needs write access there",
            )
        })?;
    }
    let outcome = Outcome {
        store_paths: closure.paths.len(),
        result: closure.result.to_string(),
        closure_hash: format!("sha256:{}", closure.closure_hash()),
        times: [
            ("nix", nix_time),
            ("layers", layers_time),
            ("image", image_time.saturating_sub(layers_time)),
        ],
        nix_ran,
        layers_written,
        built,
    };
    write_report(&dir, &closure, &outcome, builder, volume);
    Ok(outcome)
}

fn write_report(
    dir: &std::path::Path,
    closure: &crate::closure::Closure,
    o: &Outcome,
    builder: &BuilderImage,
    volume: &str,
) {
    let report = serde_json::json!({
        "image": o.built.reference,
        "builder": builder.reference,
        "store_volume": volume,
        "id": o.built.id,
        "manifest_digest": o.built.oci.as_ref().map(|m| m.manifest_digest.to_string()),
        "config_digest": o.built.oci.as_ref().map(|m| m.config_digest.to_string()),
        "size": o.built.size,
        "result": closure.result,
        "closure_hash": closure.closure_hash(),
        "store_paths": o.store_paths,
        "nar_size": closure.nar_size(),
        "diff_ids": o.built.diff_ids,
        "built": o.built.built,
        "nix_ran": o.nix_ran,
        "layers_written": o.layers_written,
        "seconds": o.times.iter().map(|(s, d)| (s.to_string(), d.as_secs_f64())).collect::<std::collections::BTreeMap<_, _>>(),
    });
    let text = serde_json::to_string_pretty(&report).expect("report serializes");
    let _ = crate::outputs::write_atomic(&dir.join("report.json"), text.as_bytes());
}

/// Which image goes to which `--output`: `oci:DIR` holds the one image
/// selected, or a sub-folder per image when there are several;
/// `oci-archive:FILE` holds one image.
fn plan_outputs(outputs: &[Output], images: &[&Image]) -> Result<Vec<(String, Output)>, Error> {
    let mut planned = Vec::new();
    for o in outputs {
        match o {
            Output::Oci(dir) if images.len() > 1 => {
                for i in images {
                    let sub = dir.join(i.name.to_string().replace(['/', ':'], "_"));
                    planned.push((i.name.to_string(), Output::Oci(sub)));
                }
            }
            Output::OciArchive(file) if images.len() > 1 => {
                return Err(Error::msg(
                    format!(
                        "oci-archive:{} holds one image, and this build has {}",
                        file.display(),
                        images.len()
                    ),
                    "pick one with --image NAME, or write oci:DIR (a sub-folder per image)",
                ))
            }
            o => planned.extend(images.iter().map(|i| (i.name.to_string(), o.clone()))),
        }
    }
    Ok(planned)
}

/// Writes a built image to an OCI layout folder or archive.
fn write_output(
    ctx: &Ctx<'_>,
    image: &Image,
    built: &stages::image::Built,
    output: &Output,
) -> Result<(), String> {
    let made = built.oci.as_ref().ok_or(
        "the Engine's Dockerfile builder made this image (the scratch template needs it), so nixpack has no OCI image of its own to write",
    )?;
    let tag = crate::oci::ImageTag {
        name: image.name.clone(),
        tag: image.tag.clone(),
    };
    let stage = ctx
        .ui
        .stage(&image.name.to_string(), &format!("writing {output:?}"));
    match output {
        Output::Oci(dir) => {
            crate::oci::write_layout_dir(dir, made, &built.layer_files, &tag)
                .map_err(|e| e.to_string())?;
        }
        Output::OciArchive(file) => {
            let parent = file
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            let tmp = tempfile::NamedTempFile::new_in(parent).map_err(|e| e.to_string())?;
            let mut tar = tar::Builder::new(std::io::BufWriter::new(tmp));
            crate::oci::write_layout_archive(&mut tar, made, &built.layer_files, &tag)
                .map_err(|e| e.to_string())?;
            let tmp = tar
                .into_inner()
                .map_err(|e| e.to_string())?
                .into_inner()
                .map_err(|e| e.to_string())?;
            tmp.persist(file).map_err(|e| e.to_string())?;
        }
    }
    stage.done("written");
    Ok(())
}

/// The lock entries of the images that built, each with the engine's id
/// for the image (to tag or remove it by).
fn locked_images(done: &[(String, Outcome)], manifest: &Manifest) -> Vec<(LockedImage, String)> {
    done.iter()
        .filter_map(|(reference, o)| {
            let image = manifest
                .images
                .iter()
                .find(|i| i.reference() == *reference)?;
            let made = o.built.oci.as_ref();
            let locked = LockedImage {
                name: image.name.to_string(),
                tag: image.tag.to_string(),
                result: o.result.clone(),
                closure_hash: o.closure_hash.clone(),
                manifest_digest: made.map(|m| m.manifest_digest.to_string()),
                config_digest: made.map(|m| m.config_digest.to_string()),
                diff_ids: o.built.diff_ids.clone(),
            };
            Some((locked, o.built.id.clone()))
        })
        .collect()
}

/// Writes nixpack.lock, or with `--locked` compares it and tags the
/// images only when it would not change.
async fn finish_lock(
    engine: &Engine,
    manifest: &Manifest,
    builder: &BuilderImage,
    done: &[(LockedImage, String)],
    locked: bool,
    ui: &Ui,
) -> Result<(), Error> {
    let path = manifest.root.join(LOCK_NAME);
    // Read, merge and write under a lock: a parallel `--image` build would
    // otherwise drop this one's entries.
    let _turn =
        crate::outputs::lock_file(&crate::outputs::project_dir(manifest).join(".lock"), || {
            ui.log("waiting for another nixpack writing nixpack.lock")
        })
        .await
        .map_err(|e| Error::internal("locking nixpack.lock", e))?;
    let old_text = std::fs::read_to_string(&path).ok();
    let old = match old_text.as_deref().map(Lock::parse) {
        Some(Ok(l)) => Some(l),
        Some(Err(e)) if locked => {
            return Err(Error::msg(
                e,
                "remove nixpack.lock and build without --locked to write a fresh one",
            ))
        }
        _ => None,
    };
    let order: Vec<String> = manifest.images.iter().map(|i| i.name.to_string()).collect();
    let lock = Lock::merge(
        old.as_ref(),
        LockedBuilder {
            from: manifest.builder.from.to_string(),
            base_rootfs: builder.base_rootfs.clone(),
        },
        done.iter().map(|(l, _)| l.clone()).collect(),
        &order,
    );
    let text = lock.render();
    if locked {
        let Some(old_text) = old_text else {
            return Err(Error::msg(
                "--locked, but there is no nixpack.lock",
                "build once without --locked to write it, and check it in",
            ));
        };
        if old_text != text {
            // The images made for this build stay untagged: remove them
            // (never forced, so an image still tagged elsewhere stays).
            for (_, id) in done {
                let _ = engine.remove_image(id).await;
            }
            return Err(Error::msg(
                format!("the build would change nixpack.lock:\n{}", lock::diff(&old_text, &text)),
                "if the change is intended, build without --locked and check in the new nixpack.lock; no image was tagged",
            ));
        }
        for (l, id) in done {
            engine.tag(id, &l.name, &l.tag).await.map_err(Error::user)?;
        }
        ui.log("nixpack.lock is up to date");
        return Ok(());
    }
    if old_text.as_deref() != Some(text.as_str()) {
        let scratch = crate::outputs::project_dir(manifest);
        crate::outputs::write_atomic_via(&scratch, &path, text.as_bytes())
            .map_err(|e| Error::internal("writing nixpack.lock", e))?;
        ui.log(&format!("wrote {}", path.display()));
    }
    Ok(())
}
