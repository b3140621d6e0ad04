//! Helpers shared by the tests that run the `quiver` binary.
#![allow(
    dead_code,
    reason = "each test binary uses its own part of these helpers"
)]

/// A free local TCP port.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `quiver` process, killed if the test fails before it stops it.
pub(crate) struct KillOnDrop(pub(crate) Option<std::process::Child>);

impl KillOnDrop {
    /// Panics with the log if the process has exited.
    pub(crate) fn assert_running(&mut self, log: &std::path::Path) {
        if let Some(status) = self.child().try_wait().unwrap() {
            self.0 = None;
            panic!(
                "the process exited early ({status}): {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }

    pub(crate) fn child(&mut self) -> &mut std::process::Child {
        self.0.as_mut().expect("still running")
    }

    pub(crate) fn take(&mut self) -> std::process::Child {
        self.0.take().expect("still running")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
