//! The messages between a PID namespace's PID 1 and the process that names what
//! it leaves (the process that forked it, or, when systemd made the inner mode
//! PID 1 with PrivatePIDs=, the launcher), over one SOCK_SEQPACKET socket: one
//! message per packet, typed, and an end of file when the other side is gone.
//!
//!   parent → PID 1   Start     the command may execve (read by the command's own
//!                              child, through `exec::Gate`)
//!   PID 1 → parent   Orphans   the command ended and others are left, stopped:
//!                              list them now, by the PIDs the caller knows
//!   parent → PID 1   Listed    they are listed: kill them
//!   PID 1 → parent   Report    what PID 1 found (`Findings`)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::protocol::findings::Findings;

#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Start,
    Orphans,
    Listed,
    Report(Findings),
}

const START: u8 = b'S';
const ORPHANS: u8 = b'O';
const LISTED: u8 = b'L';
const REPORT: u8 = b'R';

/// The largest message: a report carries no orphans (the parent lists them), so
/// it is a few lines.
const MAX_MESSAGE: usize = 64 * 1024;

/// One end of the pair.
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair, close-on-exec: the command never inherits either end.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let mut fds = [0; 2];
        // SAFETY: socketpair writes two descriptors into the array.
        let rc = unsafe {
            libc::socketpair(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0, fds.as_mut_ptr())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: both descriptors are fresh and owned by nobody else.
        Ok(unsafe { (Channel(OwnedFd::from_raw_fd(fds[0])), Channel(OwnedFd::from_raw_fd(fds[1]))) })
    }

    pub fn send(&self, message: &Message) -> io::Result<()> {
        let bytes = match message {
            Message::Start => vec![START],
            Message::Orphans => vec![ORPHANS],
            Message::Listed => vec![LISTED],
            Message::Report(findings) => {
                let mut bytes = vec![REPORT];
                bytes.extend_from_slice(findings.encode().as_bytes());
                bytes
            }
        };
        if bytes.len() > MAX_MESSAGE {
            return Err(io::Error::other("a message too large for the channel"));
        }
        loop {
            // SAFETY: a buffer of bytes.len() bytes; MSG_NOSIGNAL: a gone peer is EPIPE.
            let n = unsafe {
                libc::send(self.0.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL)
            };
            if n >= 0 {
                return Ok(());
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
    }

    /// The next message; None when the other side has closed its end. On a
    /// non-blocking end, WouldBlock when none is there yet.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut buf = vec![0u8; MAX_MESSAGE];
        let n = loop {
            // SAFETY: a writable buffer of its length.
            let n = unsafe { libc::recv(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n >= 0 {
                break n as usize;
            }
            let error = io::Error::last_os_error();
            if error.kind() != io::ErrorKind::Interrupted {
                return Err(error);
            }
        };
        match buf[..n] {
            [] => Ok(None),
            [START] => Ok(Some(Message::Start)),
            [ORPHANS] => Ok(Some(Message::Orphans)),
            [LISTED] => Ok(Some(Message::Listed)),
            [REPORT, ..] => Ok(Some(Message::Report(Findings::decode(&String::from_utf8_lossy(&buf[1..n]))))),
            _ => Err(io::Error::new(io::ErrorKind::InvalidData, "an unknown message on the channel")),
        }
    }

    pub fn raw(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    /// A listening socket at PATH, for one connection (the inner mode's).
    pub fn listen(path: &Path) -> io::Result<OwnedFd> {
        let fd = socket(libc::SOCK_NONBLOCK)?;
        let address = address(path)?;
        // SAFETY: a socket we own and a valid sockaddr_un of its size.
        if unsafe { libc::bind(fd.as_raw_fd(), (&raw const address).cast(), size_of_val(&address) as u32) }
            != 0
            || unsafe { libc::listen(fd.as_raw_fd(), 1) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
    }

    /// Connect to the listening socket at PATH.
    pub fn connect(path: &Path) -> io::Result<Channel> {
        let fd = socket(0)?;
        let address = address(path)?;
        // SAFETY: a socket we own and a valid sockaddr_un of its size.
        if unsafe { libc::connect(fd.as_raw_fd(), (&raw const address).cast(), size_of_val(&address) as u32) }
            != 0
        {
            return Err(io::Error::last_os_error());
        }
        Ok(Channel(fd))
    }

    /// The connection waiting on a listening socket, non-blocking.
    pub fn accept(listener: &OwnedFd) -> io::Result<Channel> {
        // SAFETY: accept4 on our listening socket, without the peer's address.
        let fd = unsafe {
            libc::accept4(
                listener.as_raw_fd(),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(Channel(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// The peer's PID, as this process's PID namespace numbers it.
    pub fn peer_pid(&self) -> io::Result<u32> {
        let mut credentials = libc::ucred { pid: 0, uid: 0, gid: 0 };
        let mut len = size_of::<libc::ucred>() as libc::socklen_t;
        // SAFETY: SO_PEERCRED fills a ucred of the given size.
        let rc = unsafe {
            libc::getsockopt(
                self.0.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERCRED,
                (&raw mut credentials).cast(),
                &mut len,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(credentials.pid as u32)
    }
}

impl AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

fn socket(flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: a plain socket(2) call.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC | flags, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn address(path: &Path) -> io::Result<libc::sockaddr_un> {
    // SAFETY: an all-zero sockaddr_un is valid.
    let mut address: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    address.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= address.sun_path.len() {
        return Err(io::Error::other(format!("{} is too long for a socket", path.display())));
    }
    for (slot, &byte) in address.sun_path.iter_mut().zip(bytes) {
        *slot = byte as libc::c_char;
    }
    Ok(address)
}

/// Whether `Start` arrived on this end. Only system calls: the command's child,
/// which shares its parent's memory, waits here.
pub fn started(fd: RawFd) -> bool {
    let mut byte = [0u8; 2];
    loop {
        // SAFETY: a two-byte buffer; a longer message is truncated and not Start.
        let n = unsafe { libc::recv(fd, byte.as_mut_ptr().cast(), byte.len(), 0) };
        if n >= 0 || nix::errno::Errno::last() != nix::errno::Errno::EINTR {
            return n == 1 && byte[0] == START;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::status::Termination;

    #[test]
    fn messages_cross_one_by_one_and_a_closed_end_is_the_end() {
        let (parent, pid1) = Channel::pair().unwrap();
        parent.send(&Message::Start).unwrap();
        parent.send(&Message::Listed).unwrap();
        assert!(started(pid1.raw()));
        assert_eq!(pid1.recv().unwrap(), Some(Message::Listed));
        let findings = Findings { termination: Some(Termination::Exited(3)), ..Findings::default() };
        pid1.send(&Message::Orphans).unwrap();
        pid1.send(&Message::Report(findings.clone())).unwrap();
        assert_eq!(parent.recv().unwrap(), Some(Message::Orphans));
        assert_eq!(parent.recv().unwrap(), Some(Message::Report(findings)));
        drop(pid1);
        assert_eq!(parent.recv().unwrap(), None);
    }

    #[test]
    fn a_listening_socket_takes_one_connection_and_knows_its_peer() {
        let path = std::env::temp_dir().join(format!("phasebox-channel-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = Channel::listen(&path).unwrap();
        let connected = Channel::connect(&path).unwrap();
        let accepted = Channel::accept(&listener).unwrap();
        assert_eq!(accepted.peer_pid().unwrap(), std::process::id());
        connected.send(&Message::Orphans).unwrap();
        assert_eq!(accepted.recv().unwrap(), Some(Message::Orphans));
        assert_eq!(accepted.recv().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn anything_but_start_keeps_the_command_from_starting() {
        let (parent, pid1) = Channel::pair().unwrap();
        parent.send(&Message::Listed).unwrap();
        assert!(!started(pid1.raw()));
        drop(parent);
        assert!(!started(pid1.raw()));
    }
}
