//! The service backend, in systemd-run's steps: connect, build properties, subscribe,
//! start, wait for the unit to end without losing a fast one, read its status, report.

use std::os::fd::{AsRawFd, OwnedFd};

use anyhow::{Context, anyhow};
use futures_util::StreamExt;
use zbus::fdo::PropertiesProxy;
use zbus::proxy::CacheProperties;

use super::Outcome;
use crate::exit::{Failure, Termination};
use crate::findings::Findings;
use crate::namespaces::Kind;
use crate::plan::Plan;
use crate::systemd::proxies::{ManagerProxy, ServiceProxy, UnitProxy};
use crate::systemd::{self, Manager, unit_name};

const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";
const DESTINATION: &str = "org.freedesktop.systemd1";

pub async fn run(plan: Plan) -> Result<Outcome, Failure> {
    let connection = systemd::connect(plan.manager).await?;
    let exec_path = inner_executable()?;
    let stdio = Stdio::of_caller()?;
    let properties = plan.unit_properties(&exec_path, stdio.raw());
    if plan.verbose {
        let on = if plan.manager == Manager::System { "system" } else { "user" };
        eprintln!("phasebox: starting {} on the {on} manager", plan.unit);
        for property in &properties {
            eprintln!("phasebox:   {property} ({})", property.signature());
        }
    }

    let manager = ManagerProxy::builder(&connection)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .context("creating the systemd manager proxy")?;
    let unit_path = unit_name::object_path(&plan.unit);
    // Listen before starting: a phase may end before StartTransientUnit returns.
    let mut changes = PropertiesProxy::builder(&connection)
        .destination(DESTINATION)
        .path(unit_path.clone())
        .build()
        .await
        .context("creating the unit's properties proxy")?
        .receive_properties_changed()
        .await
        .context("subscribing to the unit's property changes")?;
    let mut jobs = manager.receive_job_removed().await.context("subscribing to job signals")?;
    manager.subscribe().await.context("subscribing to systemd signals")?;

    plan.files.write_context(&plan.context.encode())?;
    let dbus_properties: Vec<_> = properties.iter().map(|p| p.to_dbus()).collect();
    let job = manager
        .start_transient_unit(&plan.unit, "fail", &dbus_properties, &[])
        .await
        .map_err(|e| explain_start_error(e, &plan))?;
    drop(stdio);

    // 1. The start job ends: the unit has started, or failed to.
    while let Some(signal) = jobs.next().await {
        let args = signal.args().context("decoding JobRemoved")?;
        if args.job == job {
            break;
        }
    }
    // 2. The unit is inactive or failed. After the job ended, a Get is authoritative;
    //    later changes arrive as signals (AddRef keeps the unit until we read it).
    let unit = UnitProxy::builder(&connection)
        .path(unit_path.clone())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .context("creating the unit proxy")?;
    loop {
        let state = unit.active_state().await.context("reading the unit's ActiveState")?;
        if is_final(&state) {
            break;
        }
        loop {
            let signal =
                changes.next().await.ok_or_else(|| anyhow!("lost the bus connection while the phase ran"))?;
            let args = signal.args().context("decoding PropertiesChanged")?;
            if args.interface_name.as_str() == UNIT_INTERFACE
                && args.changed_properties.contains_key("ActiveState")
            {
                break;
            }
        }
    }

    // 3. The exact status, then what the inner mode found.
    let service = ServiceProxy::builder(&connection)
        .path(unit_path)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .context("creating the service proxy")?;
    let (code, status, result) =
        futures_util::try_join!(service.exec_main_code(), service.exec_main_status(), service.result())
            .context("reading the phase's exit status")?;
    // Collected now rather than when systemd notices our disconnect.
    unit.unref().await.context("releasing the unit")?;
    let findings = plan.files.read_findings().map(|b| Findings::decode(&String::from_utf8_lossy(&b)));
    outcome(&plan, code, status, &result, findings)
}

fn is_final(state: &str) -> bool {
    state == "inactive" || state == "failed"
}

fn outcome(
    plan: &Plan,
    code: i32,
    status: i32,
    result: &str,
    findings: Option<Findings>,
) -> Result<Outcome, Failure> {
    let journal = journal_hint(plan);
    let findings = match findings {
        Some(f) => f,
        None => {
            return Err(anyhow!(
                "the phase never started inside {} (systemd's result: {result}); see `{journal}`",
                plan.unit
            )
            .into());
        }
    };
    if findings.refused {
        return Err(isolation_error(plan, &findings.missing).into());
    }
    if let Some(error) = findings.setup_error {
        return Err(anyhow!("could not restore your context inside {}: {error}", plan.unit).into());
    }
    let termination = Termination::from_cld(code, status).ok_or_else(|| {
        anyhow!("{} ended without an exit status (result: {result}); see `{journal}`", plan.unit)
    })?;
    Ok(Outcome { termination, orphans: findings.orphans })
}

fn isolation_error(plan: &Plan, missing: &[Kind]) -> anyhow::Error {
    let what: Vec<_> = missing.iter().map(|k| k.describe()).collect();
    let props: Vec<_> = missing.iter().map(|k| k.property()).collect();
    let why = match plan.manager {
        Manager::System => "systemd lacks the privilege to create namespaces here",
        Manager::User => "a user manager can only do so inside a user namespace (PrivateUsers=yes)",
    };
    anyhow!(
        "the phase did not get a {}: systemd accepted {} but did not apply {} ({why}); \
         the command was not run. Run phasebox where namespaces are allowed, or pass \
         --best-effort to run without that isolation. See `{}`",
        what.join(" or "),
        props.join(" and "),
        if missing.len() == 1 { "it" } else { "them" },
        journal_hint(plan)
    )
}

fn journal_hint(plan: &Plan) -> String {
    match plan.manager {
        Manager::System => format!("journalctl -u {}", plan.unit),
        Manager::User => format!("journalctl --user -u {}", plan.unit),
    }
}

fn explain_start_error(error: zbus::Error, plan: &Plan) -> Failure {
    let unit = &plan.unit;
    let message = match &error {
        zbus::Error::MethodError(name, text, _) => {
            let text = text.as_deref().unwrap_or("");
            match name.as_str() {
                "org.freedesktop.systemd1.UnitExists" => {
                    format!(
                        "unit {unit} already exists; choose another name with --unit, or leave --unit out"
                    )
                }
                "org.freedesktop.DBus.Error.AccessDenied"
                | "org.freedesktop.DBus.Error.InteractiveAuthorizationRequired" => {
                    format!("systemd refused to start {unit}: {text}; run as root, or use --user")
                }
                "org.freedesktop.DBus.Error.PropertyReadOnly"
                | "org.freedesktop.DBus.Error.UnknownProperty" => {
                    format!("this systemd does not accept a property phasebox sent: {text}")
                }
                "org.freedesktop.DBus.Error.InvalidArgs" => {
                    format!("systemd rejected a property value: {text}")
                }
                _ => format!("systemd refused to start {unit}: {name}: {text}"),
            }
        }
        other => format!("asking systemd to start {unit} failed: {other}"),
    };
    Failure::from(anyhow!(message))
}

/// phasebox itself, run by systemd as the unit's ExecStart in inner mode.
fn inner_executable() -> Result<String, Failure> {
    let path = std::env::current_exe().context("finding phasebox's own executable")?;
    path.to_str().map(str::to_owned).ok_or_else(|| {
        anyhow!("phasebox's own path {} is not UTF-8, which D-Bus can't carry", path.display()).into()
    })
}

/// The caller's stdin, stdout and stderr, handed to systemd as descriptors; a closed
/// one is replaced by /dev/null so the command still finds 0, 1 and 2 open.
struct Stdio {
    raw: [i32; 3],
    _replacements: Vec<OwnedFd>,
}

impl Stdio {
    fn of_caller() -> Result<Stdio, Failure> {
        let mut raw = [0, 1, 2];
        let mut replacements = Vec::new();
        for (fd, slot) in raw.iter_mut().enumerate() {
            // SAFETY: F_GETFD only checks whether the descriptor is open.
            if unsafe { libc::fcntl(fd as i32, libc::F_GETFD) } == -1 {
                let null: OwnedFd = std::fs::OpenOptions::new()
                    .read(fd == 0)
                    .write(fd != 0)
                    .open("/dev/null")
                    .context("opening /dev/null for a closed standard descriptor")?
                    .into();
                *slot = null.as_raw_fd();
                replacements.push(null);
            }
        }
        Ok(Stdio { raw, _replacements: replacements })
    }

    fn raw(&self) -> [i32; 3] {
        self.raw
    }
}
