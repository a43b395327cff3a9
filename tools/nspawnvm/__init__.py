"""Manage a local Debian "VM" (13 or 12: --release): a systemd-nspawn container booted with
systemd as PID 1.

The VM gets its own IPv4 address on a veth pair (host side ve-NAME), reaches the outside through
NAT on the host, and is reached by SSH with its own key pair and a pinned host key. It stands in
for the Vagrant VM on Linux hosts: the Ansible roles deploy onto it as onto any Debian host.
With --bridge several VMs share one L2 network instead, the host on the bridge, VM k (--index)
at the subnet's address .k+1; a lab is such a group, LAB1..LABN on bridge br-LAB.

    localvm.py [--name NAME] [--subnet CIDR] [--bridge BRIDGE] [--index K] [--release R]
               {up,stop,destroy,status,address,ssh-config,ssh}
    localvm.py [--name LAB] [--subnet CIDR] lab {up --count N,stop,destroy,status [--count N]}

Everything except `address` and `ssh-config` needs root on Linux with systemd-nspawn,
debootstrap and iptables. Progress goes to stderr, prefixed `localvm:`.

Modules, each using only those above it:

    errors     LocalVMError, PreconditionError and say(): what reaches stderr
    host       running programs (PATH, locale, errors, logs), locks, preconditions
    config     names, subnets, addresses, file locations (Machine), the state file (VMState)
               and which VMs share a bridge
    processes  the nspawn command line, finding and stopping the VM's processes
    network    subnet collisions, the host address on the veth or bridge, NAT, ip_forward
    ssh        client key, ssh_config, pinned known_hosts, waiting for sshd
    rootfs     the cached debootstrap base image and each VM's copy of it
    commands   up, stop, destroy, status, address, ssh-config, ssh; the per-VM lock
    lab        LAB1..LABN on br-LAB: lab up, stop, destroy, status
    cli        options, the VM they describe, dispatch, exit statuses
"""
