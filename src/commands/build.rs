//! `nixpack build`: every stage, for every selected image, `-j` at a time.
//!
//! The builder image and the store volume are shared and made once; then
//! each image runs nix → layers → image. Ctrl-C removes every container
//! nixpack started before exiting; a failed image never gets its tag.

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::cli::BuildArgs;
use crate::engine::Engine;
use crate::error::Error;
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
    /// Whether nix-build ran.
    pub nix_ran: bool,
    /// Closure layers written.
    pub layers_written: usize,
}

/// Runs `nixpack build`.
pub fn run(manifest: Manifest, args: &BuildArgs, ui: Ui) -> Result<(), Error> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(|e| Error::internal("starting the async runtime", e))?;
    rt.block_on(async {
        let engine = Engine::connect().await.map_err(Error::user)?;
        let work = build(&engine, &manifest, args, &ui);
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

async fn build(engine: &Engine, manifest: &Manifest, args: &BuildArgs, ui: &Ui) -> Result<(), Error> {
    let started = Instant::now();
    let images = manifest.select(&args.images).map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?;
    let renderer = Renderer::new(manifest)?;
    let ctx = Ctx { engine, manifest, renderer: &renderer, ui };
    let (builder, _built) = stages::builder::ensure(&ctx).await?;
    let volume = stages::store::ensure(&ctx, &builder).await?;

    let results: Vec<(String, Result<Outcome, Error>)> = futures_util::stream::iter(images)
        .map(|image| {
            let ctx = &ctx;
            let builder = &builder;
            let volume = &volume;
            async move { (image.reference(), build_one(ctx, builder, volume, image).await) }
        })
        .buffer_unordered(usize::from(args.jobs))
        .collect()
        .await;

    let mut failures = Vec::new();
    ui.line(&format!("{:<40} {:>10} {:>6} {:>8}  {}", "IMAGE", "SIZE", "PATHS", "TIME", "STATUS"));
    for (reference, r) in &results {
        match r {
            Ok(o) => {
                let total: Duration = o.times.iter().map(|(_, d)| *d).sum();
                let status = if o.built.built {
                    format!("built ({} layer(s) written{})", o.layers_written, if o.nix_ran { ", nix-build ran" } else { "" })
                } else {
                    "unchanged".to_owned()
                };
                ui.line(&format!("{:<40} {:>10} {:>6} {:>7.1}s  {status}", reference, stages::nix::human_bytes(o.built.size), o.store_paths, total.as_secs_f64()));
            }
            Err(_) => ui.line(&format!("{reference:<40} {:>10} {:>6} {:>8}  FAILED", "-", "-", "-")),
        }
    }
    ui.log(&format!("done in {:.1}s", started.elapsed().as_secs_f64()));
    for (reference, r) in results {
        if let Err(e) = r {
            failures.push((reference, e));
        }
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.pop().expect("one").1),
        n => {
            for (reference, e) in &failures {
                eprintln!("{reference}: {:?}", e.report());
            }
            Err(Error::msg(format!("{n} images failed"), "see the errors above"))
        }
    }
}

async fn build_one(ctx: &Ctx<'_>, builder: &BuilderImage, volume: &str, image: &Image) -> Result<Outcome, Error> {
    let dir = crate::outputs::image_dir(ctx.manifest, image);
    let t = Instant::now();
    let (closure, nix_ran) = stages::nix::run(ctx, builder, volume, image, &dir).await?;
    let nix_time = t.elapsed();
    let t = Instant::now();
    let layers = stages::layers::run(ctx, builder, volume, image, &dir, &closure).await?;
    let layers_time = t.elapsed();
    let t = Instant::now();
    let built = stages::image::run(ctx, image, &dir, &closure, &layers).await?;
    let image_time = t.elapsed();
    let outcome = Outcome {
        store_paths: closure.paths.len(),
        times: [("nix", nix_time), ("layers", layers_time), ("image", image_time)],
        nix_ran,
        layers_written: layers.written,
        built,
    };
    write_report(&dir, &closure, &outcome);
    Ok(outcome)
}

fn write_report(dir: &std::path::Path, closure: &crate::closure::Closure, o: &Outcome) {
    let report = serde_json::json!({
        "image": o.built.reference,
        "id": o.built.id,
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
