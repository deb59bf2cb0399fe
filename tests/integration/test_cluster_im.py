"""IM across nodes (issue 12): three tetherd nodes on one real redis-server.

XEP-0280 carbons reach the account's resources on other nodes, with and
without XEP-0198; the IM state of a session (carbons, XEP-0352 CSI, its
available presence) survives an XEP-0198 resumption on another node; and
offline messages handed to a session whose node is killed with SIGKILL
before the client acknowledged them are not lost."""

import signal
import time

import pytest

import conftest as cf
import sm_client as smc
import xmpp_raw as xr
from test_cluster import Cluster
from test_im import NS_CARBONS, carbons, no_carbon, wait_carbon
from xmpp_raw import q, tostr

PING = "<ping xmlns='urn:xmpp:ping'/>"


@pytest.fixture
def cluster(server_factory, tmp_path):
    c = Cluster(server_factory, tmp_path)
    yield c
    c.close()


def plain(node, user, resource, presence=True):
    """Without XEP-0198: a direct entry in the account's directory."""
    c = xr.login(node, user, cf.USERS[user], resource, presence=presence)
    c.roundtrip()
    return c


def with_sm(node, user, resource):
    """With XEP-0198 (acks answered), available."""
    c = smc.sm_login(node, user, cf.USERS[user], resource, presence=True, auto_ack=True)
    c.roundtrip()
    return c


# ----------------------------------------------------------------------------- carbons

def test_carbons_reach_resources_on_other_nodes(cluster, conns):
    """alice/phone on a (SM), alice/laptop on b (no SM) and alice/tablet on
    c (SM) with carbons, alice/watch on b without; bob on c. Received and
    sent copies cross nodes; <private/>, <no-copy/> and copies are not
    copied; a resource that disabled carbons gets none."""
    a, b, c = (cluster.nodes[n] for n in 'abc')
    phone = with_sm(a, 'alice', 'phone')
    laptop = plain(b, 'alice', 'laptop')
    tablet = with_sm(c, 'alice', 'tablet')
    watch = plain(b, 'alice', 'watch')
    bob = plain(c, 'bob', 'desk')
    conns.extend([phone, laptop, tablet, watch, bob])
    for r in (phone, laptop, tablet):
        carbons(r)

    bob.message(phone.jid, 'in-1')
    phone.wait_message('in-1', timeout=10)
    for r in (laptop, tablet):
        inner = wait_carbon(r, 'received', 'in-1')
        assert inner.get('from') == bob.jid and inner.get('to') == phone.jid, tostr(inner)

    phone.message(bob.jid, 'out-1')
    bob.wait_message('out-1', timeout=10)
    for r in (laptop, tablet):
        inner = wait_carbon(r, 'sent', 'out-1')
        assert inner.get('from') == phone.jid and inner.get('to') == bob.jid, tostr(inner)

    laptop.message(bob.jid, 'out-2')                 # from the plain session, to the SM ones
    bob.wait_message('out-2', timeout=10)
    for r in (phone, tablet):
        wait_carbon(r, 'sent', 'out-2')

    phone.message(bob.jid, 'secret', extra="<private xmlns='%s'/>" % NS_CARBONS)
    bob.message(phone.jid, 'nocopy', extra="<no-copy xmlns='urn:xmpp:hints'/>")
    bob.wait_message('secret', timeout=10)
    phone.wait_message('nocopy', timeout=10)
    for r in (phone, laptop, tablet, watch):
        no_carbon(r)                              # none of the above, nor copies of copies

    carbons(tablet, on=False)
    bob.message(phone.jid, 'in-2')
    phone.wait_message('in-2', timeout=10)
    wait_carbon(laptop, 'received', 'in-2')
    no_carbon(tablet)
    no_carbon(watch)
    no_carbon(phone)
