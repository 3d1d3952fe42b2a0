"""Drives dtx with the published Python client `dtmcli` (PyPI 1.7.7.0), unchanged.

Usage: dtmcli_flows.py DTM_URL BUSI_URL
Prints one JSON object naming the gid of each flow it ran.
"""

import json
import sys

from dtmcli import dtmimp, msg, saga, tcc, utils


def main():
    dtm, busi = sys.argv[1], sys.argv[2]
    out = {}

    gid = utils.gen_gid(dtm)
    s = saga.Saga(dtm, gid)
    s.add({"amount": 30}, busi + "/TransOut", busi + "/TransOutCompensate")
    s.add({"amount": 30}, busi + "/TransIn", busi + "/TransInCompensate")
    s.submit()
    out["commit"] = gid

    gid = utils.gen_gid(dtm)
    s = saga.Saga(dtm, gid)
    s.add({"amount": 30}, busi + "/TransOut", busi + "/TransOutCompensate")
    s.add({"amount": 30}, busi + "/TransInRefused", busi + "/TransInCompensate")
    s.submit()
    out["rollback"] = gid

    gid = utils.gen_gid(dtm)
    m = msg.Msg(dtm, gid)
    m.add({"amount": 30}, busi + "/TransIn")
    m.prepare(busi + "/QueryPrepared")
    m.submit()
    out["msg"] = gid

    # a prepared msg aborted by the client
    gid = utils.gen_gid(dtm)
    m = msg.Msg(dtm, gid)
    m.add({"amount": 30}, busi + "/TransIn")
    m.prepare(busi + "/QueryPrepared")
    dtmimp.trans_call_dtm(dtm, m.trans_base.__dict__, "abort", 8)
    out["aborted"] = gid

    # a finished saga cannot be aborted: the client must see FAILURE (409)
    try:
        dtmimp.trans_call_dtm(dtm, {"gid": out["commit"], "trans_type": "saga"}, "abort", 8)
        out["abort_refused"] = False
    except utils.DTMFailureError:
        out["abort_refused"] = True

    # TCC that commits: both tries succeed
    def two_branches(try_second):
        def cb(t):
            t.call_branch({"amount": 30}, busi + "/TransOutTry", busi + "/TransOutConfirm", busi + "/TransOutCancel")
            t.call_branch({"amount": 30}, busi + try_second, busi + "/TransInConfirm", busi + "/TransInCancel")
        return cb

    gid = utils.gen_gid(dtm)
    out["tcc_commit"] = tcc.tcc_global_transaction(dtm, gid, two_branches("/TransInTry"))
    # TCC that rolls back: the second try is refused, the client aborts
    gid = utils.gen_gid(dtm)
    out["tcc_rollback_returned"] = tcc.tcc_global_transaction(dtm, gid, two_branches("/TransInTryRefused"))
    out["tcc_rollback"] = gid

    print(json.dumps(out))


if __name__ == "__main__":
    main()
