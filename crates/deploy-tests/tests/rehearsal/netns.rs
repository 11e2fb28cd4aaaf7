//! Hosts of their own on one machine: a network namespace per container, each with a veth
//! pair to one bridge, and compose's service names in `/etc/netns/<namespace>/hosts`, which
//! `ip netns exec` mounts over `/etc/hosts` for whatever runs inside.
//!
//! The bridge lives in a namespace of its own too, so that the machine's own network is never
//! touched: nothing of the rehearsal is reachable from the root namespace, and it from none.
//! [`Network`] removes every namespace, link and hosts file it made when it is dropped.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

/// Runs `ip` with `args`, failing the test with what it printed when it fails.
pub fn ip(args: &[&str]) {
    let output = Command::new("ip")
        .args(args)
        .output()
        .expect("`ip` (iproute2) runs");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The rehearsal's network: one bridge, and a host per compose service.
pub struct Network {
    /// A short tag of this run, in every name it makes, so that runs never collide.
    tag: String,
    /// The namespace holding the bridge.
    switch: String,
    /// `10.<a>.<b>.0/24`: the run's subnet.
    subnet: [u8; 2],
    /// Each host's namespace and address, by compose service name.
    hosts: BTreeMap<String, (String, Ipv4Addr)>,
}

impl Network {
    /// A bridge in a namespace of its own, on a subnet chosen from the run's tag.
    pub fn new() -> Network {
        let tag = uuid::Uuid::new_v4().simple().to_string()[..6].to_owned();
        let bytes = u32::from_str_radix(&tag, 16).expect("hex");
        // 10.200.0.0 to 10.255.255.0: far from what machines and CI runners usually use.
        let subnet = [200 + (bytes >> 8 & 0x37) as u8, bytes as u8];
        let switch = format!("rh{tag}-switch");
        ip(&["netns", "add", &switch]);
        let network = Network {
            tag,
            switch,
            subnet,
            hosts: BTreeMap::new(),
        };
        network.exec(
            &network.switch,
            &["ip", "link", "add", "br0", "type", "bridge"],
        );
        network.exec(&network.switch, &["ip", "link", "set", "br0", "up"]);
        network.exec(&network.switch, &["ip", "link", "set", "lo", "up"]);
        network
    }

    fn exec(&self, namespace: &str, command: &[&str]) {
        let mut args = vec!["netns", "exec", namespace];
        args.extend_from_slice(command);
        ip(&args);
    }

    /// Adds a host called `name` (a compose service): its namespace, its loopback, and a veth
    /// pair to the bridge with the next address of the subnet.
    pub fn add_host(&mut self, name: &str) -> Ipv4Addr {
        let index = u8::try_from(self.hosts.len() + 2).expect("fewer than 250 hosts");
        let address = Ipv4Addr::new(10, self.subnet[0], self.subnet[1], index);
        let namespace = format!("rh{}-{name}", self.tag);
        // Interface names have at most 15 characters.
        let (inside, outside) = (
            format!("rh{}i{index}", self.tag),
            format!("rh{}o{index}", self.tag),
        );
        ip(&["netns", "add", &namespace]);
        ip(&[
            "link", "add", &inside, "type", "veth", "peer", "name", &outside,
        ]);
        ip(&["link", "set", &inside, "netns", &namespace]);
        ip(&["link", "set", &outside, "netns", &self.switch]);
        self.exec(
            &self.switch,
            &["ip", "link", "set", &outside, "master", "br0"],
        );
        self.exec(&self.switch, &["ip", "link", "set", &outside, "up"]);
        self.exec(&namespace, &["ip", "link", "set", "lo", "up"]);
        self.exec(&namespace, &["ip", "link", "set", &inside, "name", "eth0"]);
        self.exec(
            &namespace,
            &["ip", "addr", "add", &format!("{address}/24"), "dev", "eth0"],
        );
        self.exec(&namespace, &["ip", "link", "set", "eth0", "up"]);
        self.hosts.insert(name.to_owned(), (namespace, address));
        address
    }

    /// Writes every host's `/etc/netns/<namespace>/hosts` (all the names, as compose's DNS
    /// answers them) and an empty `resolv.conf`, so that no name is looked up elsewhere.
    pub fn write_hosts_files(&self) {
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
        for (name, (_, address)) in &self.hosts {
            hosts.push_str(&format!("{address} {name}\n"));
        }
        for (namespace, _) in self.hosts.values() {
            let dir = netns_etc(namespace);
            std::fs::create_dir_all(&dir).expect("creating /etc/netns/<namespace>");
            std::fs::write(dir.join("hosts"), &hosts).expect("writing hosts");
            std::fs::write(dir.join("resolv.conf"), "").expect("writing resolv.conf");
        }
    }

    /// The namespace of a host.
    pub fn namespace(&self, name: &str) -> &str {
        &self
            .hosts
            .get(name)
            .unwrap_or_else(|| panic!("no host {name}"))
            .0
    }

    /// A command run inside a host's namespace (`ip netns exec`, which execs it: the child's
    /// process is the program's).
    pub fn command(&self, host: &str, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", self.namespace(host), program]);
        command
    }
}

fn netns_etc(namespace: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(namespace)
}

impl Drop for Network {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of each veth pair, and with it the other end.
        for (namespace, _) in self.hosts.values() {
            let _ = Command::new("ip")
                .args(["netns", "del", namespace])
                .status();
            let _ = std::fs::remove_dir_all(netns_etc(namespace));
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.switch])
            .status();
    }
}
