"""XDP, tc, cgroup_skb and socket filters against real packets.

Traffic stays on loopback or on a veth pair whose far end lives in a network
namespace this test makes (TEST-NET-2 addresses: the machine's own eth0 may sit in
TEST-NET-1). Everything is removed afterwards.
"""

import shutil
import socket
import subprocess
import uuid

import pytest

import bpfnb

COUNTERS = r"""
u64 icmp_xdp = 0, icmp_tc = 0, udp_cgroup = 0, udp_sock = 0;
const volatile u16 udp_port = 0;

static __always_inline int is_icmp(void *data, void *end)
{
    struct ethhdr *eth = data;
    if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
        return 0;
    struct iphdr *ip = (void *)(eth + 1);
    if ((void *)(ip + 1) > end)
        return 0;
    return ip->protocol == IPPROTO_ICMP;
}

SEC("xdp")
int count_xdp(struct xdp_md *ctx)
{
    if (is_icmp((void *)(long)ctx->data, (void *)(long)ctx->data_end))
        __sync_fetch_and_add(&icmp_xdp, 1);
    return XDP_PASS;
}

SEC("tc")
int count_tc(struct __sk_buff *skb)
{
    if (is_icmp((void *)(long)skb->data, (void *)(long)skb->data_end))
        __sync_fetch_and_add(&icmp_tc, 1);
    return TC_ACT_OK;
}

static __always_inline int udp_to_port(struct __sk_buff *skb, u32 ip_off)
{
    struct iphdr ip;
    struct udphdr udp;
    if (bpf_skb_load_bytes(skb, ip_off, &ip, sizeof(ip)) || ip.protocol != IPPROTO_UDP)
        return 0;
    if (bpf_skb_load_bytes(skb, ip_off + ip.ihl * 4, &udp, sizeof(udp)))
        return 0;
    return udp.dest == bpf_htons(udp_port);
}

SEC("cgroup_skb/egress")
int count_cgroup(struct __sk_buff *skb)
{
    if (udp_to_port(skb, 0))
        __sync_fetch_and_add(&udp_cgroup, 1);
    return 1;
}

SEC("socket")
int count_socket(struct __sk_buff *skb)
{
    __sync_fetch_and_add(&udp_sock, 1);
    return skb->len;
}
"""
# tc action codes are macros in linux/pkt_cls.h, not in vmlinux.h
CFLAGS = ["-DTC_ACT_OK=0", "-DETH_P_IP=0x0800"]


def ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check,
                          timeout=30)


@pytest.fixture
def veth(need_root):
    """A veth pair: host end 198.51.100.1 here, peer 198.51.100.2 in a netns of our own."""
    if not shutil.which("ip"):
        pytest.skip("iproute2 (ip) is not installed")
    tag = uuid.uuid4().hex[:6]
    ns, host, peer = f"bpfnb-{tag}", f"bnh{tag}", f"bnp{tag}"
    ip("netns", "add", ns)
    try:
        ip("link", "add", host, "type", "veth", "peer", "name", peer)
        ip("link", "set", peer, "netns", ns)
        ip("addr", "add", "198.51.100.1/24", "dev", host)
        ip("link", "set", host, "up")
        ip("-n", ns, "addr", "add", "198.51.100.2/24", "dev", peer)
        ip("-n", ns, "link", "set", peer, "up")
        ip("-n", ns, "link", "set", "lo", "up")
        yield ns, host
    finally:
        ip("link", "del", host, check=False)
        ip("netns", "del", ns, check=False)
    assert ns not in ip("netns", "list").stdout
    assert host not in ip("link").stdout


def ping_peer(n):
    """Echo requests leave the host end; the replies come back in through it."""
    r = subprocess.run(["ping", "-c", str(n), "-i", "0.05", "-W", "1", "198.51.100.2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_xdp_and_tc_count_pings_on_veth(veth, no_leaks):
    if not shutil.which("ping"):
        pytest.skip("ping (iputils-ping) is not installed")
    ns, host = veth
    with bpfnb.load(COUNTERS, cflags=CFLAGS) as obj:
        obj.progs.count_xdp.attach_xdp(host)
        obj.progs.count_tc.attach_tc(host, "ingress")
        assert "clsact" in subprocess.run(["tc", "qdisc", "show", "dev", host],
                                          capture_output=True, text=True).stdout
        ping_peer(10)
        # 10 echo replies arrive at the host end (ARP is not ICMP)
        assert obj.bss.icmp_xdp == 10
        assert obj.bss.icmp_tc == 10
    # detached: our clsact qdisc is gone with the last filter
    assert "clsact" not in subprocess.run(["tc", "qdisc", "show", "dev", host],
                                          capture_output=True, text=True).stdout


def test_cgroup_skb_and_socket_filter_count_udp(no_leaks):
    recv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    recv.bind(("127.0.0.1", 0))
    port = recv.getsockname()[1]
    recv.settimeout(5)
    with bpfnb.load(COUNTERS, cflags=CFLAGS, rodata={"udp_port": port}) as obj:
        obj.progs.count_cgroup.attach_cgroup()
        obj.progs.count_socket.attach_socket(recv)
        send = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for i in range(25):
            send.sendto(b"x%d" % i, ("127.0.0.1", port))
        for _ in range(25):
            recv.recv(64)
        send.close()
        assert obj.bss.udp_cgroup == 25
        assert obj.bss.udp_sock == 25
    recv.close()
