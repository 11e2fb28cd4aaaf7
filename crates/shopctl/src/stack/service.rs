//! The processes of the stack besides the broker, their names and their ports.

/// A process of the stack besides the broker: one of the binaries of the workspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    DataPlatformMock,
    OrderService,
    ProductService,
    CouponService,
    AnalyticsForwarder,
    /// `shopctl console`, the live web page.
    Console,
}

impl Service {
    /// Every service, in start order: the mock first, so that the forwarder finds it, and the
    /// console last, so that what it watches is there.
    pub const ALL: [Service; 6] = [
        Service::DataPlatformMock,
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
        Service::AnalyticsForwarder,
        Service::Console,
    ];

    /// The services that talk to the broker.
    pub const CLIENTS: [Service; 4] = [
        Service::OrderService,
        Service::ProductService,
        Service::CouponService,
        Service::AnalyticsForwarder,
    ];

    /// The binary's name, which is also its log's and SQLite file's name.
    pub fn name(self) -> &'static str {
        match self {
            Service::DataPlatformMock => "data-platform-mock",
            Service::OrderService => contract::Service::OrderService.name(),
            Service::ProductService => contract::Service::ProductService.name(),
            Service::CouponService => contract::Service::CouponService.name(),
            Service::AnalyticsForwarder => contract::Service::AnalyticsForwarder.name(),
            Service::Console => "console",
        }
    }

    /// The binary it runs (in the folder of the stack's binaries) and its arguments.
    pub(super) fn program(self) -> (&'static str, &'static [&'static str]) {
        match self {
            Service::Console => ("shopctl", &["console"]),
            other => (other.name(), &[]),
        }
    }

    /// Its port's offset from the base port (`--http-port-base`).
    pub fn port_offset(self) -> u16 {
        match self {
            Service::OrderService => 0,
            Service::ProductService => 1,
            Service::CouponService => 2,
            Service::AnalyticsForwarder => 3,
            Service::Console => 8,
            Service::DataPlatformMock => 10,
        }
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_service_has_its_own_port_and_name() {
        let ports: std::collections::BTreeSet<u16> =
            Service::ALL.iter().map(|s| s.port_offset()).collect();
        let names: std::collections::BTreeSet<&str> =
            Service::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(ports.len(), Service::ALL.len());
        assert_eq!(names.len(), Service::ALL.len());
        assert!(Service::CLIENTS.iter().all(|s| Service::ALL.contains(s)));
        assert!(!Service::CLIENTS.contains(&Service::DataPlatformMock));
    }
}
