//! The negotiation with systemd versions that can't be booted here, against a mock
//! manager over a peer-to-peer connection that answers exactly as they do.

use std::sync::{Arc, Mutex};

use zbus::{OwnedObjectPath, OwnedVariant};

use super::*;

type Calls = Arc<Mutex<Vec<Vec<String>>>>;

/// org.freedesktop.systemd1.Manager as an older systemd answers it: an unknown
/// transient property fails the whole call with PropertyReadOnly.
struct OldSystemd {
    version: String,
    unknown: Vec<&'static str>,
    calls: Calls,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl OldSystemd {
    fn subscribe(&self) {}

    fn start_transient_unit(
        &self,
        _name: String,
        _mode: String,
        properties: Vec<(String, OwnedVariant)>,
        _aux: Vec<(String, Vec<(String, OwnedVariant)>)>,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        let names: Vec<String> = properties.into_iter().map(|(name, _)| name).collect();
        self.calls.lock().unwrap().push(names.clone());
        if let Some(unknown) = self.unknown.iter().find(|u| names.iter().any(|n| n == *u)) {
            // systemd's own text (src/core/dbus-unit.c).
            return Err(zbus::fdo::Error::PropertyReadOnly(format!(
                "Cannot set property {unknown}, or unknown property."
            )));
        }
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/7").unwrap())
    }

    #[zbus(property)]
    fn version(&self) -> String {
        self.version.clone()
    }
}

async fn old_systemd(version: &str, unknown: &[&'static str]) -> (Client, Calls, zbus::Connection) {
    let calls = Calls::default();
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    let mock = OldSystemd { version: version.into(), unknown: unknown.to_vec(), calls: calls.clone() };
    let server = zbus::connection::Builder::unix_stream(theirs)
        .server(zbus::Guid::generate())
        .p2p()
        .serve_at("/org/freedesktop/systemd1", mock)
        .build();
    let client = zbus::connection::Builder::unix_stream(ours).p2p().build();
    let (server, client) = futures_util::try_join!(server, client).unwrap();
    (Client::over(Manager::System, client).await.unwrap(), calls, server)
}

async fn start(client: &Client, split: &mut Split) -> Result<zbus::OwnedObjectPath, Failure> {
    start_negotiating(client, "phasebox-test.service", split, false, |split| {
        Ok(isolation_properties(split, Manager::System))
    })
    .await
}

#[tokio::test]
async fn a_systemd_older_than_248_is_not_asked_for_private_ipc() {
    let (client, calls, _server) = old_systemd("245.4-4ubuntu3", &["PrivateIPC"]).await;
    let mut split = Split::new(Set::all(), Manager::System, client.version().await.ok());
    assert_eq!(split.systemd, Set { network: true, ..Set::default() });
    assert_eq!(split.inner, Set { ipc: true, uts: true, pid: true, ..Set::default() });
    start(&client, &mut split).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), [["PrivateNetwork"]]);
}

#[tokio::test]
async fn a_refused_isolation_property_is_made_by_the_inner_mode_instead() {
    // A systemd that claims a new version but was built without the property.
    let (client, calls, _server) = old_systemd("252", &["PrivateIPC"]).await;
    let mut split = Split::new(Set::all(), Manager::System, client.version().await.ok());
    assert!(split.systemd.ipc);
    start(&client, &mut split).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), [vec!["PrivateNetwork", "PrivateIPC"], vec!["PrivateNetwork"]]);
    assert!(split.inner.ipc && !split.systemd.ipc);
    assert!(split.loopback_addresses, "the network namespace is still systemd's");
}

#[tokio::test]
async fn a_refused_network_keeps_the_other_isolations() {
    let (client, calls, _server) = old_systemd("230", &["PrivateNetwork"]).await;
    let mut split = Split::new(Set::all(), Manager::System, client.version().await.ok());
    start(&client, &mut split).await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 2);
    assert_eq!(split.inner, Set::all());
    assert!(!split.loopback_addresses);
}

#[tokio::test]
async fn other_refusals_are_reported_not_retried() {
    let (client, calls, _server) = old_systemd("230", &["PrivateUsers"]).await;
    let mut split = Split::new(Set::all(), Manager::User, Some(230));
    let error = start_negotiating(&client, "phasebox-test.service", &mut split, false, |split| {
        Ok(isolation_properties(split, Manager::User))
    })
    .await;
    let message = error.unwrap_err().to_string();
    assert!(message.contains("does not accept a property") && message.contains("PrivateUsers"), "{message}");
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[test]
fn a_user_manager_leaves_lo_and_the_ipc_mounts_to_the_inner_mode() {
    let split = Split::new(Set::all(), Manager::User, Some(252));
    assert!(split.inner.network && split.inner.uts && !split.loopback_addresses);
    // The mqueue of systemd's IPC namespace can't be mounted from the nested user
    // namespace: the inner mode's own IPC namespace it can.
    assert!(split.inner.ipc);
    assert!(split.systemd.network && split.systemd.ipc);
}

#[test]
fn a_systemd_of_257_or_later_makes_the_pid_namespace_with_the_inner_mode_its_pid_1() {
    for manager in [Manager::System, Manager::User] {
        let split = Split::new(Set::all(), manager, Some(257));
        assert!(split.systemd.pid && !split.inner.pid, "{manager:?}");
        assert!(isolation_properties(&split, manager).iter().any(|p| p.name == "PrivatePIDs"));
        // Older, or of an unknown version: the inner mode makes it.
        for version in [Some(256), None] {
            let split = Split::new(Set::all(), manager, version);
            assert!(!split.systemd.pid && split.inner.pid, "{manager:?} {version:?}");
        }
    }
}

#[tokio::test]
async fn a_refused_private_pids_is_made_by_the_inner_mode_instead() {
    let (client, calls, _server) = old_systemd("257.1-1", &["PrivatePIDs"]).await;
    let mut split = Split::new(Set::all(), Manager::System, client.version().await.ok());
    assert!(split.systemd.pid);
    start(&client, &mut split).await.unwrap();
    assert_eq!(calls.lock().unwrap().len(), 2);
    assert!(!split.systemd.pid && split.inner.pid);
}
