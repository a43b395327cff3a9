"""Manage a local Debian 12 "VM": a systemd-nspawn container booted with systemd as PID 1.

The VM gets its own IPv4 address on a veth pair (host side ve-NAME), reaches the outside through
NAT on the host, and is reached by SSH with its own key pair and a pinned host key. It stands in
for the Vagrant VM on Linux hosts: the Ansible roles deploy onto it as onto any Debian host.

    localvm.py [--name NAME] [--subnet CIDR] {up,stop,destroy,status,address,ssh-config,ssh}

Everything except `address` and `ssh-config` needs root on Linux with systemd-nspawn,
debootstrap and iptables. Progress goes to stderr, prefixed `localvm:`.

Modules, each using only those above it:

    errors     LocalVMError, PreconditionError and say(): what reaches stderr
    host       running programs (PATH, locale, errors, logs), locks, preconditions
    config     names, subnets, addresses, file locations (Machine), the state file (VMState)
    processes  the nspawn command line, finding and stopping the VM's processes
    network    subnet collisions, the veth's host address, NAT, ip_forward
    ssh        client key, ssh_config, pinned known_hosts, waiting for sshd
    rootfs     the cached debootstrap base image and each VM's copy of it
    commands   up, stop, destroy, status, address, ssh-config, ssh
    cli        options, dispatch, the per-VM lock, exit statuses
"""
