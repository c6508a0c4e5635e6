//! The one message type phasebox's processes talk in, over one channel each: a
//! unix stream socket carrying frames (a 4-byte little-endian length, then a
//! tag byte and the message's bytes), and an end of file when the other side is
//! gone.
//!
//!   launcher → inner mode   Context   the caller's context, to restore (service)
//!   parent → child          Start     the phase may start: the command may execve
//!                                     (read by the command's own child, through
//!                                     `exec::Gate`), the scope's isolator may go on
//!   PID 1 → parent          Orphans   the command ended and others are left,
//!                                     stopped: name them, by the PIDs the caller
//!                                     knows
//!   parent → PID 1          Listed    they are named: kill them
//!   runner → launcher       Report    what was found (`Findings`)
//!
//! The channels: the scope-mode launcher and its isolator, a PID 1 and the
//! process that forked it (socket pairs); the service-mode launcher and the
//! inner mode (a socket in the run directory, where the launcher listens).

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use crate::protocol::context::CallerContext;
use crate::protocol::findings::Findings;

#[derive(Debug, PartialEq, Eq)]
pub enum Message {
    Context(Box<CallerContext>),
    Start,
    Orphans,
    Listed,
    Report(Findings),
}

const CONTEXT: u8 = b'C';
const START: u8 = b'S';
const ORPHANS: u8 = b'O';
const LISTED: u8 = b'L';
const REPORT: u8 = b'R';

/// The largest frame accepted: a context holds the environment and argv, which
/// can be large (a 1 MiB environment is tested), but never this large.
const MAX_FRAME: usize = 256 << 20;

impl Message {
    /// The frame: length, tag, bytes.
    pub fn frame(&self) -> Vec<u8> {
        let (tag, body) = match self {
            Message::Context(context) => (CONTEXT, context.encode()),
            Message::Start => (START, Vec::new()),
            Message::Orphans => (ORPHANS, Vec::new()),
            Message::Listed => (LISTED, Vec::new()),
            Message::Report(findings) => (REPORT, findings.encode().into_bytes()),
        };
        let mut frame = ((body.len() + 1) as u32).to_le_bytes().to_vec();
        frame.push(tag);
        frame.extend(body);
        frame
    }

    /// A frame's tag and bytes, read back.
    pub fn parse(tag: u8, body: &[u8]) -> io::Result<Message> {
        let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
        Ok(match tag {
            CONTEXT => Message::Context(Box::new(
                CallerContext::decode(body).map_err(|error| invalid(format!("a context: {error:#}")))?,
            )),
            START => Message::Start,
            ORPHANS => Message::Orphans,
            LISTED => Message::Listed,
            REPORT => Message::Report(Findings::decode(&String::from_utf8_lossy(body))),
            other => return Err(invalid(format!("an unknown message {other:#x}"))),
        })
    }
}

/// One end of a channel.
pub struct Channel(UnixStream);

impl Channel {
    /// A connected pair, close-on-exec: the command never inherits either end.
    pub fn pair() -> io::Result<(Channel, Channel)> {
        let (a, b) = UnixStream::pair()?;
        Ok((Channel(a), Channel(b)))
    }

    /// Connect to the socket at PATH, where the launcher listens.
    pub fn connect(path: &Path) -> io::Result<Channel> {
        UnixStream::connect(path).map(Channel)
    }

    pub fn send(&self, message: &Message) -> io::Result<()> {
        (&self.0).write_all(&message.frame())
    }

    /// The next message; None when the other side has closed its end.
    pub fn recv(&self) -> io::Result<Option<Message>> {
        let mut header = [0u8; 4];
        if closed((&self.0).read_exact(&mut header))? {
            return Ok(None);
        }
        let mut frame = vec![0u8; frame_length(header)?];
        (&self.0).read_exact(&mut frame)?;
        Message::parse(frame[0], &frame[1..]).map(Some)
    }

    /// The findings of a `Report`; None when the other side ended without one.
    pub fn recv_findings(&self) -> io::Result<Option<Findings>> {
        loop {
            match self.recv()? {
                Some(Message::Report(findings)) => return Ok(Some(findings)),
                Some(_) => {}
                None => return Ok(None),
            }
        }
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

/// The launcher's end of the inner mode's channel, on the async runtime.
pub struct AsyncChannel(tokio::net::UnixStream);

impl From<tokio::net::UnixStream> for AsyncChannel {
    fn from(stream: tokio::net::UnixStream) -> AsyncChannel {
        AsyncChannel(stream)
    }
}

impl AsyncChannel {
    pub async fn send(&mut self, message: &Message) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.0.write_all(&message.frame()).await
    }

    /// The next message; None when the other side has closed its end.
    pub async fn recv(&mut self) -> io::Result<Option<Message>> {
        use tokio::io::AsyncReadExt;
        let mut header = [0u8; 4];
        if closed(self.0.read_exact(&mut header).await.map(drop))? {
            return Ok(None);
        }
        let mut frame = vec![0u8; frame_length(header)?];
        self.0.read_exact(&mut frame).await?;
        Message::parse(frame[0], &frame[1..]).map(Some)
    }

    /// The peer's PID, as this process's PID namespace numbers it.
    pub fn peer_pid(&self) -> io::Result<u32> {
        self.0.peer_cred()?.pid().map(|pid| pid as u32).ok_or_else(|| io::Error::other("no peer PID"))
    }
}

/// Whether `Start` arrived on this end. Only system calls: the command's child,
/// which shares its parent's memory, waits here.
pub fn started(fd: RawFd) -> bool {
    let expected = [1, 0, 0, 0, START];
    let mut frame = [0u8; 5];
    let mut got = 0;
    while got < frame.len() {
        // SAFETY: a buffer of the remaining length.
        let n = unsafe { libc::read(fd, frame[got..].as_mut_ptr().cast(), frame.len() - got) };
        match n {
            n if n > 0 => got += n as usize,
            0 => return false,
            _ if nix::errno::Errno::last() == nix::errno::Errno::EINTR => {}
            _ => return false,
        }
    }
    frame == expected
}

/// Whether reading a frame's header met the end of the stream: the other side
/// closed its end between frames.
fn closed(read: io::Result<()>) -> io::Result<bool> {
    match read {
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        result => result.map(|()| false),
    }
}

/// The length a frame's header gives, if it is one a peer may send.
fn frame_length(header: [u8; 4]) -> io::Result<usize> {
    let length = u32::from_le_bytes(header) as usize;
    if length == 0 || length > MAX_FRAME {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a frame of {length} bytes")));
    }
    Ok(length)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::findings::Orphan;
    use crate::protocol::status::Termination;

    #[test]
    fn messages_cross_one_by_one_and_a_closed_end_is_the_end() {
        let (parent, pid1) = Channel::pair().unwrap();
        parent.send(&Message::Start).unwrap();
        parent.send(&Message::Listed).unwrap();
        assert!(started(pid1.as_raw_fd()));
        assert_eq!(pid1.recv().unwrap(), Some(Message::Listed));
        let findings = Findings {
            termination: Some(Termination::Exited(3)),
            orphans: vec![Orphan { pid: 42, comm: "sleep".into() }, Orphan { pid: 43, comm: "a b".into() }],
            ..Findings::default()
        };
        pid1.send(&Message::Orphans).unwrap();
        pid1.send(&Message::Report(findings.clone())).unwrap();
        assert_eq!(parent.recv().unwrap(), Some(Message::Orphans));
        assert_eq!(parent.recv_findings().unwrap(), Some(findings));
        drop(pid1);
        assert_eq!(parent.recv().unwrap(), None);
    }

    #[test]
    fn a_context_of_any_size_crosses_whole() {
        let (launcher, inner) = Channel::pair().unwrap();
        let mut context = CallerContext::example();
        context.caller.env.push(format!("BIG={}", "x".repeat(2 << 20)).into());
        let sent = context.clone();
        let writer = std::thread::spawn(move || launcher.send(&Message::Context(Box::new(sent))).unwrap());
        assert_eq!(inner.recv().unwrap(), Some(Message::Context(Box::new(context))));
        writer.join().unwrap();
    }

    #[test]
    fn anything_but_start_keeps_the_command_from_starting() {
        let (parent, pid1) = Channel::pair().unwrap();
        parent.send(&Message::Listed).unwrap();
        assert!(!started(pid1.as_raw_fd()));
        drop(parent);
        assert!(!started(pid1.as_raw_fd()));
    }
}
