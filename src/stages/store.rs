//! Stage `store`: the persistent `/nix` volume.
//!
//! Docker seeds an empty named volume from the image's `/nix` once, on
//! first mount; after that the volume keeps whatever it has. So a volume
//! must only ever be used with the builder recipe it was seeded from: it is
//! named after the recipe's key (base image id + builder Dockerfile) and
//! labelled with it, and a volume whose label disagrees is refused. An
//! unchanged base keeps its warm store; every project on the same base
//! shares it.
//!
//! Seeding happens under an engine-wide lock, the (never started)
//! container `nixpack-seeding-<volume>`. A volume is *seeded* only once a
//! marker volume `<volume>.seeded` exists whose labels name the volume's
//! creation time: the seeder writes it last, so a volume labelled but not
//! yet (or never completely) seeded is never taken for seeded, whether its
//! seeder is still at work, was interrupted or was killed. A reader that
//! finds no marker waits while the lock's owner lives, and otherwise takes
//! the lock and seeds the volume itself (seeding is idempotent: Docker
//! fills an empty volume, Nix initialises a missing database).
//!
//! A lock's owner is gone — and the lock is taken over at once — when the
//! lock names a process on this machine (host name, machine id and boot
//! id) whose pid no longer runs with the start time the lock recorded, or
//! a previous boot of this machine. An owner on another machine cannot be
//! checked from here, and an older nixpack wrote no owner: those locks are
//! taken over once older than [`SEED_WAIT`], far longer than seeding takes.

use std::collections::HashMap;

use super::builder::BuilderImage;
use super::Ctx;
use crate::engine::{LockFacts, LockOwner, RunSpec};
use crate::error::Error;

const RECIPE_LABEL: &str = "dev.nixpack.store.recipe";

/// The store volume, as the nix stage's key sees it: a volume removed and
/// made again under the same name is another store.
#[derive(Debug, Clone)]
pub struct Store {
    /// Volume name.
    pub name: String,
    /// When the engine created it.
    pub created_at: String,
}

/// How long a lock whose owner cannot be checked is waited for.
pub const SEED_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

/// Labels of the marker volume `<volume>.seeded`.
const SEEDED_FOR: &str = "dev.nixpack.store.seeded";
const SEEDED_CREATED: &str = "dev.nixpack.store.volume-created";
/// Label of the seeding container, so a taker-over can remove a dead
/// seeder's leftover.
const SEEDING: &str = "dev.nixpack.seeding";

/// The marker volume's name for `volume`.
pub fn marker_name(volume: &str) -> String {
    format!("{volume}.seeded")
}

/// What to do about a seeding lock.
#[derive(Debug, PartialEq, Eq)]
pub enum LockVerdict {
    /// Its owner may still be seeding: wait.
    Wait,
    /// Its owner is gone: remove the lock and seed.
    TakeOver,
}

/// The rule of the module doc, as a pure function.
pub fn judge_lock(lock: &LockFacts, here: &LockOwner) -> LockVerdict {
    let gone = lock.owner.as_ref().and_then(|o| o.gone(here));
    match gone {
        Some(true) => LockVerdict::TakeOver,
        Some(false) => LockVerdict::Wait,
        None if lock.age > SEED_WAIT => LockVerdict::TakeOver,
        None => LockVerdict::Wait,
    }
}

/// Ensures the store volume exists, matches the builder and is seeded.
pub async fn ensure(ctx: &Ctx<'_>, builder: &BuilderImage) -> Result<Store, Error> {
    let name = ctx
        .manifest
        .builder
        .store_volume
        .clone()
        .unwrap_or_else(|| format!("nixpack-store-{}", &builder.store_key[..16]));
    let lock = format!("nixpack-seeding-{name}");
    let here = LockOwner::me();
    let mut said_waiting = false;
    loop {
        if let Some(store) = seeded(ctx, builder, &name).await? {
            return Ok(store);
        }
        if let Some(held) = ctx.engine()?.lock_facts(&lock).await.map_err(Error::user)? {
            match judge_lock(&held, &here) {
                LockVerdict::Wait => {
                    if !said_waiting {
                        said_waiting = true;
                        ctx.ui.log(&format!(
                            "store: waiting for another nixpack seeding `{name}`"
                        ));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                }
                LockVerdict::TakeOver => {
                    ctx.ui.log(&format!(
                        "store: the nixpack seeding `{name}` is gone ({}); taking over",
                        match &held.owner {
                            Some(o) => format!("process {} no longer runs", o.pid),
                            None => format!("its lock is {} s old", held.age.as_secs()),
                        }
                    ));
                    // By id: if someone took it over first, this removes nothing.
                    ctx.engine()?
                        .force_remove_container(&held.id)
                        .await
                        .map_err(Error::user)?;
                }
            }
            continue;
        }
        if let Some(id) = ctx
            .engine()?
            .try_lock(&lock, &builder.id)
            .await
            .map_err(Error::user)?
        {
            // Someone may have finished seeding between our look and the lock.
            let done = match seeded(ctx, builder, &name).await {
                Ok(Some(_)) => Ok(()),
                Ok(None) => seed(ctx, builder, &name).await,
                Err(e) => Err(e),
            };
            ctx.engine()?
                .force_remove_container(&id)
                .await
                .map_err(Error::user)?;
            done?;
        }
    }
}

/// The store, when its volume exists, matches the builder and is marked
/// seeded; an error when it belongs to another recipe.
async fn seeded(ctx: &Ctx<'_>, builder: &BuilderImage, name: &str) -> Result<Option<Store>, Error> {
    let Some((labels, created_at)) = ctx
        .engine()?
        .volume_facts(name)
        .await
        .map_err(Error::user)?
    else {
        return Ok(None);
    };
    if labels.get(RECIPE_LABEL) != Some(&builder.store_key) {
        let seeded = labels
            .get(RECIPE_LABEL)
            .map_or("something that is not a nixpack builder".to_owned(), |k| {
                format!("builder recipe {}", &k[..16.min(k.len())])
            });
        return Err(Error::msg(
            format!("the store volume `{name}` was seeded from {seeded}, not from this builder (recipe {})", &builder.store_key[..16]),
            "a /nix volume must not be shared with a builder it does not match; remove `[builder] store-volume` to get one named after this builder, or remove the old volume",
        ));
    }
    let marker = ctx
        .engine()?
        .volume_facts(&marker_name(name))
        .await
        .map_err(Error::user)?;
    let marked = marker.is_some_and(|(m, _)| {
        m.get(SEEDED_FOR).map(String::as_str) == Some(name)
            && m.get(SEEDED_CREATED) == Some(&created_at)
    });
    Ok(marked.then(|| Store {
        name: name.to_owned(),
        created_at,
    }))
}

/// Seeds `name` under the lock: creates it (or keeps the unfinished one),
/// fills and initialises it, and marks it seeded last.
async fn seed(ctx: &Ctx<'_>, builder: &BuilderImage, name: &str) -> Result<(), Error> {
    // A dead seeder's container may still hold the volume.
    ctx.engine()?
        .remove_containers_labelled(&format!("{SEEDING}={name}"))
        .await
        .map_err(Error::user)?;
    // A marker that does not match the volume (made again by hand) goes.
    ctx.engine()?
        .remove_volume(&marker_name(name))
        .await
        .map_err(Error::user)?;
    let stage = ctx.ui.stage("store", &format!("creating volume {name}"));
    let labels = HashMap::from([
        (RECIPE_LABEL.to_owned(), builder.store_key.clone()),
        (
            "dev.nixpack.store.base".to_owned(),
            builder.base_rootfs.clone(),
        ),
    ]);
    ctx.engine()?
        .create_volume(name, labels)
        .await
        .map_err(Error::user)?;
    // Docker fills an empty volume from the image's /nix on first mount;
    // opening the store here initialises Nix's database once.
    let spec = RunSpec {
        image: &builder.id,
        cmd: vec!["-c".into(), "nix-instantiate --eval -E 1 >/dev/null".into()],
        entrypoint: Some(vec!["/bin/sh".into()]),
        env: vec![],
        volumes: vec![(name.to_owned(), "/nix".into())],
        uploads: vec![],
        labels: HashMap::from([
            ("dev.nixpack.stage".to_owned(), "store".to_owned()),
            (SEEDING.to_owned(), name.to_owned()),
        ]),
        raw_stdout: false,
    };
    let mut tail = Vec::new();
    let code = ctx
        .engine()?
        .run_to_completion(&spec, |l| tail.push(l.to_owned()), None)
        .await
        .map_err(Error::user)?;
    if code != 0 {
        // Unmarked, it never passes for seeded; remove it if nothing uses it.
        let _ = ctx.engine()?.remove_volume(name).await;
        return Err(Error::msg(
            format!("Nix does not run in the builder `{}` (exit {code}): {}", builder.reference, tail.join(" | ")),
            "the base image in `[builder] from` must have Nix (nix-build, nix-store, nix-instantiate), a POSIX shell and coreutils",
        ));
    }
    let created_at = ctx
        .engine()?
        .volume_facts(name)
        .await
        .map_err(Error::user)?
        .map(|(_, c)| c)
        .unwrap_or_default();
    ctx.engine()?
        .create_volume(
            &marker_name(name),
            HashMap::from([
                (SEEDED_FOR.to_owned(), name.to_owned()),
                (SEEDED_CREATED.to_owned(), created_at),
                (RECIPE_LABEL.to_owned(), builder.store_key.clone()),
            ]),
        )
        .await
        .map_err(Error::user)?;
    stage.done("seeded");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn here() -> LockOwner {
        LockOwner::me()
    }

    fn lock(owner: Option<LockOwner>, age: u64) -> LockFacts {
        LockFacts {
            id: "x".into(),
            owner,
            age: Duration::from_secs(age),
        }
    }

    #[test]
    fn stale_seeding_lock_of_a_dead_process_is_taken_over_at_once() {
        let mut dead = here();
        // No process runs with this start time.
        dead.start = "0".into();
        assert_eq!(
            judge_lock(&lock(Some(dead), 1), &here()),
            LockVerdict::TakeOver
        );
        let mut gone_pid = here();
        gone_pid.pid = u32::MAX - 1;
        assert_eq!(
            judge_lock(&lock(Some(gone_pid), 1), &here()),
            LockVerdict::TakeOver
        );
        let mut rebooted = here();
        rebooted.boot = "another-boot".into();
        assert_eq!(
            judge_lock(&lock(Some(rebooted), 1), &here()),
            LockVerdict::TakeOver
        );
    }

    #[test]
    fn a_live_owner_is_waited_for_however_long_it_seeds() {
        assert_eq!(
            judge_lock(&lock(Some(here()), 10_000), &here()),
            LockVerdict::Wait
        );
    }

    #[test]
    fn an_owner_that_cannot_be_checked_is_waited_for_up_to_the_bound() {
        let mut remote = here();
        remote.host = "elsewhere/abc".into();
        assert_eq!(
            judge_lock(&lock(Some(remote.clone()), 10), &here()),
            LockVerdict::Wait
        );
        assert_eq!(
            judge_lock(&lock(Some(remote), 301), &here()),
            LockVerdict::TakeOver
        );
        assert_eq!(judge_lock(&lock(None, 10), &here()), LockVerdict::Wait);
        assert_eq!(judge_lock(&lock(None, 301), &here()), LockVerdict::TakeOver);
    }
}
