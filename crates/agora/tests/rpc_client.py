# An NSPI client built on impacket's DCE/RPC (as a test drives it): binds with NTLM at
# the level asked, reads the special table, resolves names, restricts by display-name
# prefix and by ANR (NspiGetMatches, which impacket declares but does not define: its
# call is defined here with impacket's NDR types), reads rows and properties, asks the
# referral interface. Prints one line per fact for the test to check.
#   usage: rpc_client.py IP PORT USER PASSWORD DOMAIN LEVEL [small-fragments]
import sys

from impacket.dcerpc.v5 import nspi, oxabref, rpcrt, transport
from impacket.dcerpc.v5.dtypes import DWORD, NULL
from impacket.dcerpc.v5.ndr import NDRCALL

ip, port, user, password, domain, level = sys.argv[1:7]
small = len(sys.argv) > 7

if small:
    # The bind offers the smallest fragments MS-RPCE allows, so long answers come in
    # many fragments; requests go out in fragments of 300 octets.
    original = rpcrt.MSRPCBind.__init__

    def small_bind(self, *a, **k):
        original(self, *a, **k)
        self['max_tfrag'] = 1432
        self['max_rfrag'] = 1432

    rpcrt.MSRPCBind.__init__ = small_bind


class NspiGetMatches(NDRCALL):
    opnum = 5
    structure = (
        ('hRpc', nspi.handle_t),
        ('Reserved1', DWORD),
        ('pStat', nspi.STAT),
        ('pReserved', nspi.PPropertyTagArray_r),
        ('Reserved2', DWORD),
        ('Filter', nspi.PRestriction_r),
        ('lpPropName', nspi.PPropertyName_r),
        ('ulRequested', DWORD),
        ('pPropTags', nspi.PPropertyTagArray_r),
    )


class NspiGetMatchesResponse(NDRCALL):
    structure = (
        ('pStat', nspi.STAT),
        ('ppOutMIds', nspi.PPropertyTagArray_r),
        ('ppRows', nspi.PPropertyRowSet_r),
        ('ErrorCode', DWORD),
    )


nspi.OPNUMS[5] = (NspiGetMatches, NspiGetMatchesResponse)


class NspiSeekEntries(NDRCALL):
    # As MS-OXNSPI declares it (impacket's takes the two tag arrays inline).
    opnum = 4
    structure = (
        ('hRpc', nspi.handle_t),
        ('Reserved', DWORD),
        ('pStat', nspi.STAT),
        ('pTarget', nspi.PropertyValue_r),
        ('lpETable', nspi.PPropertyTagArray_r),
        ('pPropTags', nspi.PPropertyTagArray_r),
    )


NspiSeekEntriesResponse = nspi.NspiSeekEntriesResponse


class NspiGetProps(NDRCALL):
    # MS-OXNSPI: `[in] STAT* pStat` is a reference, so the STAT travels inline
    # (impacket 0.10 sends it behind a unique pointer).
    opnum = 9
    structure = (
        ('hRpc', nspi.handle_t),
        ('dwFlags', DWORD),
        ('pStat', nspi.STAT),
        ('pPropTags', nspi.PPropertyTagArray_r),
    )


NspiGetPropsResponse = nspi.NspiGetPropsResponse


class NspiGetSpecialTable(NDRCALL):
    # Likewise `[in] STAT* pStat` and `[in, out] DWORD* lpVersion`.
    opnum = 12
    structure = (
        ('hRpc', nspi.handle_t),
        ('dwFlags', DWORD),
        ('pStat', nspi.STAT),
        ('lpVersion', DWORD),
    )


NspiGetSpecialTableResponse = nspi.NspiGetSpecialTableResponse
nspi.OPNUMS[9] = (NspiGetProps, NspiGetPropsResponse)
nspi.OPNUMS[12] = (NspiGetSpecialTable, NspiGetSpecialTableResponse)
nspi.OPNUMS[4] = (NspiSeekEntries, NspiSeekEntriesResponse)

DISPLAY = 0x3001001F
SMTP = 0x39FE001F
LEGACY = 0x3003001F
TAGS = [DISPLAY, SMTP, LEGACY, 0x3A00001F, 0x3A17001F, 0x3A18001F, 0x3A08001F, 0x0FFE0003, 0x39000003, 0x0FFF0102]


def connect(uuid):
    t = transport.DCERPCTransportFactory('ncacn_ip_tcp:%s[%s]' % (ip, port))
    t.set_credentials(user, password, domain)
    dce = t.get_dce_rpc()
    dce.set_auth_type(rpcrt.RPC_C_AUTHN_WINNT)
    dce.set_auth_level(int(level))
    if small:
        dce.set_max_fragment_size(300)
    dce.connect()
    dce.bind(uuid)
    return dce


def tags_of(request, field, tags):
    for t in tags:
        d = DWORD()
        d['Data'] = t
        request[field]['aulPropTag'].append(d)
    request[field]['cValues'] = len(tags)
    request.fields[field].fields['Data'].fields['aulPropTag'].fields['MaximumCount'] = len(tags) + 1


def get_matches(dce, handle, restriction, requested=100):
    req = NspiGetMatches()
    req['hRpc'] = handle
    req['pStat']['CodePage'] = nspi.CP_WINUNICODE
    req['pReserved'] = NULL
    req['Filter'] = restriction
    req['lpPropName'] = NULL
    req['ulRequested'] = requested
    tags_of(req, 'pPropTags', [DISPLAY, SMTP])
    resp = dce.request(req, checkError=False)
    if resp['ErrorCode'] != 0:
        return 'error 0x%x' % resp['ErrorCode'], []
    rows = nspi.simplifyPropertyRowSet(resp['ppRows'])
    return 'ok', [(r.get(DISPLAY), r.get(SMTP)) for r in rows]


def value(tag, text):
    v = nspi.PropertyValue_r()
    v['ulPropTag'] = tag
    v['Value']['tag'] = tag & 0xFFFF
    v['Value']['lpszW'] = text + '\x00'
    return v


def prefix(text):
    # A content restriction: display name begins with the text, case folded.
    r = nspi.Restriction_r()
    r['rt'] = 3
    r['res']['tag'] = 3
    r['res']['resContent']['ulFuzzyLevel'] = 0x00010002
    r['res']['resContent']['ulPropTag'] = DISPLAY
    r['res']['resContent']['lpProp'] = value(DISPLAY, text)
    return r


def anr(text):
    # A property restriction on PR_ANR, as Outlook's "check names" sends.
    r = nspi.Restriction_r()
    r['rt'] = 4
    r['res']['tag'] = 4
    r['res']['resProperty']['relop'] = 4
    r['res']['resProperty']['ulPropTag'] = 0x360C001F
    r['res']['resProperty']['lpProp'] = value(0x360C001F, text)
    return r


dce = connect(nspi.MSRPC_UUID_NSPI)
handle = nspi.hNspiBind(dce)['contextHandle']
print('bound')

req = NspiGetSpecialTable()
req['hRpc'] = handle
req['dwFlags'] = nspi.NspiUnicodeStrings
req['pStat']['CodePage'] = nspi.CP_WINUNICODE
special = dce.request(req)
for row in nspi.simplifyPropertyRowSet(special['ppRows']):
    print('container', row.get(DISPLAY), row.get(0xFFFD0003), row.get(0x30050003))

resolved = nspi.hNspiResolveNamesW(dce, handle, pPropTags=TAGS, paStr=['ann', 'bob@example.org', 'annabel', 'nobody-here'])
print('resolve mids', ' '.join(str(m['Data']) for m in resolved['ppMIds']['aulPropTag']))
for row in nspi.simplifyPropertyRowSet(resolved['ppRows']):
    print('resolved', row.get(DISPLAY), row.get(SMTP), row.get(LEGACY), row.get(0x3A00001F), row.get(0x3A17001F),
          row.get(0x3A18001F), row.get(0x3A08001F), row.get(0x0FFE0003), row.get(0x39000003),
          type(row.get(0x0FFF0102)).__name__)

print('prefix', *get_matches(dce, handle, prefix('bo')))
print('prefix-hidden', *get_matches(dce, handle, prefix('annab')))
print('anr', *get_matches(dce, handle, anr('ann')))
print('anr-hidden', *get_matches(dce, handle, anr('annabel')))

# The whole Global Address List, in pages.
seen = []
stat = nspi.STAT()
stat['CodePage'] = nspi.CP_WINUNICODE
while True:
    page = nspi.hNspiQueryRows(dce, handle, pStat=stat, Count=3000 if small else 2, pPropTags=[DISPLAY, SMTP])
    rows = nspi.simplifyPropertyRowSet(page['ppRows'])
    seen += [(r.get(DISPLAY), r.get(SMTP)) for r in rows]
    stat = page['pStat']
    if not rows or stat['CurrentRec'] == nspi.MID_END_OF_TABLE:
        break
names = [d.lower() for d, _ in seen]
print('gal', len(seen), 'sorted' if names == sorted(names) else 'unsorted', ' '.join(s for _, s in seen[:3]))
print('gal-hidden', any(s == 'annabel@example.org' for _, s in seen))

# Ann's row by her Mid, and her Mid by her legacy DN.
mid = resolved['ppMIds']['aulPropTag'][0]['Data']
req = NspiGetProps()
req['hRpc'] = handle
req['pStat']['CurrentRec'] = mid
req['pStat']['CodePage'] = nspi.CP_WINUNICODE
tags_of(req, 'pPropTags', [DISPLAY, SMTP])
row = nspi.simplifyPropertyRow(dce.request(req)['ppRows'])
print('props', row.get(DISPLAY), row.get(SMTP))
legacy = nspi.simplifyPropertyRowSet(resolved['ppRows'])[0][LEGACY]
dn = nspi.hNspiDNToMId(dce, handle, pNames=[legacy])
print('dn-to-mid', dn['ppOutMIds']['aulPropTag'][0]['Data'] == mid)

# Positions: a move by three rows, two Mids compared, an explicit table, a seek.
stat = nspi.STAT()
stat['CodePage'] = nspi.CP_WINUNICODE
stat['Delta'] = 3
moved = nspi.hNspiUpdateStat(dce, handle, stat, plDelta=1)
print('update-stat', moved['pStat']['NumPos'], moved['plDelta'], moved['ErrorCode'])
bob = resolved['ppMIds']['aulPropTag'][1]['Data']
cmp = nspi.NspiCompareMIds()
cmp['hRpc'] = handle
cmp['MId1'] = mid
cmp['MId2'] = bob
print('compare', dce.request(cmp)['plResult'] < 0)
print('prop-list', len(nspi.hNspiGetPropList(dce, handle, dwMId=mid, CodePage=nspi.CP_WINUNICODE)['ppOutMIds']['aulPropTag']) >= 10)
explicit = nspi.hNspiQueryRows(dce, handle, lpETable=[bob, mid], pPropTags=[DISPLAY])
print('explicit', [r[DISPLAY] for r in nspi.simplifyPropertyRowSet(explicit['ppRows'])])
seek = NspiSeekEntries()
seek['hRpc'] = handle
seek['pStat']['CodePage'] = nspi.CP_WINUNICODE
seek['pTarget'] = value(DISPLAY, 'bo')
seek['lpETable'] = NULL
tags_of(seek, 'pPropTags', [DISPLAY])
found = dce.request(seek)
print('seek', found['pStat']['CurrentRec'] == bob, nspi.simplifyPropertyRowSet(found['ppRows'])[0][DISPLAY])

if small:
    # A request of many fragments: two hundred names resolved at once.
    names = ['p%04d' % i for i in range(0, 400, 2)]
    many = nspi.hNspiResolveNamesW(dce, handle, pPropTags=[SMTP], paStr=names)
    got = [r[SMTP] for r in nspi.simplifyPropertyRowSet(many['ppRows'])]
    print('many', len(got), got == [n + '@example.org' for n in names])

nspi.hNspiUnbind(dce, handle)
dce.disconnect()

# The referral interface names this server for the address book.
ref = connect(oxabref.MSRPC_UUID_OXABREF)
print('referral', oxabref.hRfrGetNewDSA(ref, pUserDN='')['ppszServer'])
ref.disconnect()
print('done')
