//! Which release a deploy rolls out: one named by id, the one that last succeeded in
//! another environment (`--from staging`), or the release of a version, made when it
//! is first asked for (its tag resolved to a digest once, by the registry). Nothing is
//! recorded here: a new release is recorded with the deployment, in one transaction,
//! so a refused deploy leaves no trace.

use drover_shared::image::ImageRef;

use super::preview::DigestLookup;
use super::{DeployError, DeployRequest, Deployer, ReleaseChoice};
use crate::registry_api::{self, Lookup};
use crate::state::DeploymentState;
use crate::store::{Release, StoreError, now_ms};

/// The release a deploy rolls out.
#[derive(Debug, Clone)]
pub(super) struct Chosen {
    /// The release (recorded already, or to record with the deployment).
    pub release: Release,
    /// Whether it is new: recorded with the deployment.
    pub is_new: bool,
    /// How its digest is known, or why it is not yet.
    pub digest: DigestLookup,
}

impl Chosen {
    /// The image the deployment pulls: pinned to the digest when known.
    pub fn image(&self) -> String {
        self.release
            .pinned()
            .unwrap_or_else(|| format!("{}:{}", self.release.image, self.release.tag))
    }
}

impl Deployer {
    /// Records the release of `req`'s version (`drover release create`): its tag
    /// resolved to a digest now. The same service, tag and digest give the release
    /// already recorded; the flag says whether it is new.
    pub async fn create_release(
        &self,
        req: &DeployRequest,
    ) -> Result<(Release, bool), DeployError> {
        let chosen = self.choose_release(req).await?;
        if !chosen.is_new {
            return Ok((chosen.release, false));
        }
        Ok(self.shared.store.create_release(chosen.release).await?)
    }

    /// Finds or makes the release `req` deploys; refuses (nothing recorded) a release
    /// that does not exist or is of another service, an environment with no success to
    /// promote from, and a tag the registry does not have.
    pub(super) async fn choose_release(&self, req: &DeployRequest) -> Result<Chosen, DeployError> {
        let service = &req.spec.service.name;
        let existing = |release: Release, digest: DigestLookup| Chosen {
            release,
            is_new: false,
            digest,
        };
        match &req.release {
            ReleaseChoice::Id(id) => {
                let release = match self.shared.store.release(id).await {
                    Ok(r) => r,
                    Err(StoreError::NoRelease(_)) => {
                        return Err(DeployError::Release(format!(
                            "no release {id:?}; list the releases of {service} with `drover releases {service}`"
                        )));
                    }
                    Err(e) => return Err(e.into()),
                };
                self.same_service(&release, service)?;
                self.still_in_registry(&release, req).await?;
                Ok(existing(release, DigestLookup::FromRelease))
            }
            ReleaseChoice::From(env) => {
                let Some(d) = self
                    .shared
                    .store
                    .last_in(service, env, DeploymentState::Succeeded)
                    .await?
                    .filter(|d| !d.release_id.is_empty())
                else {
                    return Err(DeployError::Release(format!(
                        "{service} has no successful deployment in {env} to promote from; deploy it there first (`drover deploy --env {env} ...`) and see `drover releases {service}`"
                    )));
                };
                let release = self.shared.store.release(&d.release_id).await?;
                self.same_service(&release, service)?;
                self.still_in_registry(&release, req).await?;
                Ok(existing(release, DigestLookup::FromRelease))
            }
            ReleaseChoice::Version { version, image } => {
                self.release_of_version(req, version, image.as_deref())
                    .await
            }
        }
    }

    /// Refuses a release whose digest the registry no longer has (when it can ask).
    async fn still_in_registry(
        &self,
        release: &Release,
        req: &DeployRequest,
    ) -> Result<(), DeployError> {
        let Some(pinned) = release.pinned() else {
            return Ok(());
        };
        let Ok(image) = ImageRef::parse(&pinned) else {
            return Ok(());
        };
        let auth = req
            .auth
            .clone()
            .or_else(|| self.shared.settings.registry_credentials.for_image(&pinned));
        match registry_api::check_digest(&image, auth.as_ref()).await {
            Lookup::Missing(_) => Err(DeployError::Release(format!(
                "release {} ({} {}) is {}, which registry {} no longer has; make a new release of the version (`drover release create --version {}`) after pushing it again",
                release.id,
                release.service,
                release.tag,
                release.digest,
                image.registry_host(),
                release.tag
            ))),
            Lookup::Refused(why) => Err(DeployError::Image(why)),
            Lookup::Digest(_) | Lookup::Unknown(_) => Ok(()),
        }
    }

    fn same_service(&self, release: &Release, service: &str) -> Result<(), DeployError> {
        if release.service == service {
            return Ok(());
        }
        Err(DeployError::Release(format!(
            "release {} is of service {}, not {service}; list the releases of {service} with `drover releases {service}`",
            release.id, release.service
        )))
    }

    /// The release of a tag (or a full image reference): the one recorded for the same
    /// tag and digest, or a new one.
    async fn release_of_version(
        &self,
        req: &DeployRequest,
        version: &str,
        image: Option<&str>,
    ) -> Result<Chosen, DeployError> {
        let spec = &req.spec;
        let reference = match image {
            Some(i) => i.to_string(),
            None if version.is_empty() => {
                return Err(DeployError::Image(
                    "no version given: pass --version TAG (or --image REF, --release ID, --from ENV)"
                        .into(),
                ));
            }
            None => format!("{}:{version}", spec.service.image),
        };
        let parsed = ImageRef::parse(&reference).map_err(|e| DeployError::Image(e.to_string()))?;
        let tag = if !version.is_empty() {
            version.to_string()
        } else {
            parsed.tag_or_latest().unwrap_or("pinned").to_string()
        };
        let (digest, lookup) = match &parsed.digest {
            Some(d) => (d.clone(), DigestLookup::InReference),
            None => {
                let auth = req.auth.clone().or_else(|| {
                    self.shared
                        .settings
                        .registry_credentials
                        .for_image(&reference)
                });
                match registry_api::resolve(&parsed, auth.as_ref()).await {
                    Lookup::Digest(d) => (d, DigestLookup::FromRegistry),
                    Lookup::Missing(why) | Lookup::Refused(why) => {
                        return Err(DeployError::Image(why));
                    }
                    Lookup::Unknown(why) => (String::new(), DigestLookup::AtPullTime(why)),
                }
            }
        };
        if !digest.is_empty()
            && let Some(release) = self
                .shared
                .store
                .find_release(&spec.service.name, &tag, &digest)
                .await?
        {
            return Ok(Chosen {
                release,
                is_new: false,
                digest: lookup,
            });
        }
        let (mut commit_sha, mut commit_ms) = req.commit.clone().unwrap_or_default();
        if (commit_sha.is_empty() || commit_ms.is_none()) && !digest.is_empty() {
            // Flags win; the image's own OCI labels fill what they leave out.
            let pinned = ImageRef::parse(&parsed.pinned(&digest)).ok();
            let auth = req.auth.clone().or_else(|| {
                self.shared
                    .settings
                    .registry_credentials
                    .for_image(&reference)
            });
            if let Some(origin) = match &pinned {
                Some(p) => registry_api::image_origin(p, auth.as_ref()).await,
                None => None,
            } {
                if commit_sha.is_empty() {
                    commit_sha = origin.revision.unwrap_or_default();
                }
                commit_ms = commit_ms.or(origin.created_ms);
            }
        }
        Ok(Chosen {
            release: Release {
                id: new_release_id(),
                service: spec.service.name.clone(),
                tag,
                image: parsed.name(),
                digest,
                commit_sha,
                commit_ms,
                created_by: req.requested_by.clone(),
                created_ms: now_ms(),
            },
            is_new: true,
            digest: lookup,
        })
    }
}

/// `r-` + 12 hex digits.
pub(crate) fn new_release_id() -> String {
    let u = uuid::Uuid::new_v4().simple().to_string();
    format!("r-{}", &u[..12])
}
