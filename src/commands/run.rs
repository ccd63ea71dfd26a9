//! `nixpack run`: start a built image with its declared ports published on
//! 127.0.0.1 (same port numbers), stream its output, and stop and remove it
//! when it exits or on Ctrl-C.

use std::collections::HashMap;

use crate::cli::RunArgs;
use crate::engine::{Engine, RunSpec};
use crate::error::Error;
use crate::manifest::Manifest;
use crate::ui::Ui;

/// Runs `nixpack run`.
pub fn run(manifest: Manifest, args: &RunArgs, ui: Ui) -> Result<(), Error> {
    let image = match &args.image {
        Some(n) => *manifest
            .select(std::slice::from_ref(n))
            .map_err(|m| Error::msg(m, "pass a name declared in an `[[image]]` table"))?
            .first()
            .expect("one name, one image"),
        None => &manifest.images[0],
    };
    let reference = image.reference();
    super::runtime()?.block_on(async {
        let engine = Engine::connect().await.map_err(Error::user)?;
        if ui.verbose() > 0 {
            ui.log(&format!("engine: {}", engine.endpoint));
        }
        if engine
            .inspect_image(&reference)
            .await
            .map_err(Error::user)?
            .is_none()
        {
            return Err(Error::msg(
                format!("the image `{reference}` is not built yet"),
                "run `nixpack build` first",
            ));
        }
        let ports: Vec<(String, u16)> = image
            .ports
            .iter()
            .map(|p| (p.to_string(), p.number))
            .collect();
        let spec = RunSpec {
            image: &reference,
            cmd: args.args.clone(),
            entrypoint: None,
            env: vec![],
            volumes: vec![],
            uploads: vec![],
            labels: HashMap::from([("dev.nixpack.run".to_owned(), reference.clone())]),
            binds: vec![],
            raw_stdout: false,
        };
        let id = engine
            .create_container(&spec, &ports)
            .await
            .map_err(Error::user)?;
        for p in &image.ports {
            ui.log(&format!(
                "{reference}: {p} published on 127.0.0.1:{}",
                p.number
            ));
        }
        let work = engine.start_and_wait(&id, |line| ui.line(line));
        let result = tokio::select! {
            r = work => r.map_err(Error::user),
            // Ctrl-C is how a server is meant to be stopped: not an error.
            _ = crate::ui::shutdown_signal() => {
                ui.log(&format!("{reference}: stopping and removing the container"));
                Ok(0)
            }
        };
        engine.remove_container(&id).await.map_err(Error::user)?;
        match result? {
            0 => Ok(()),
            code => Err(Error::msg(
                format!("`{reference}` exited with code {code}"),
                "its output is above",
            )),
        }
    })
}
