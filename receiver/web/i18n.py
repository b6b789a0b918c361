"""The console's message catalogue: Chinese first, English available.

One table, ``key -> (中文, English)``; templates call ``t("key")``. A key missing from the table
shows as the key itself (visible in review, never an exception), and
``tests/test_web_security.py`` checks that every key used by the templates is present.
Failure posture: pure data, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable

LANGUAGES = ("zh", "en")
DEFAULT_LANGUAGE = "zh"

CATALOGUE: dict[str, tuple[str, str]] = {
    "app.title": ("执法记录审阅台", "Evidence review console"),
    "nav.cases": ("案件", "Cases"),
    "nav.inbox": ("待归档", "Inbox"),
    "nav.assignments": ("派发", "Assignments"),
    "nav.approvals": ("审批", "Approvals"),
    "nav.report": ("问责报告", "Accountability report"),
    "nav.devices": ("设备", "Devices"),
    "nav.quarantine": ("隔离区", "Quarantine"),
    "nav.signout": ("退出", "Sign out"),
    "nav.language": ("English", "中文"),
    "login.title": ("登录", "Sign in"),
    "login.user": ("用户名", "User name"),
    "login.password": ("密码", "Password"),
    "login.submit": ("登录", "Sign in"),
    "login.failed": ("用户名或密码错误", "Wrong user name or password"),
    "login.locked": ("尝试次数过多，请 {s} 秒后再试", "Too many attempts; try again in {s} s"),
    "error.forbidden": ("无权访问", "Not allowed"),
    "error.csrf": ("表单已过期，请返回刷新后重试", "The form expired; go back, reload and retry"),
    "error.notfound": ("未找到", "Not found"),
    "error.needs_approval": (
        "查看或导出此案件的音视频需要审批",
        "Viewing or exporting this case's media needs an approval",
    ),
    "error.unavailable": ("此功能尚未安装", "This function is not installed"),
    "error.playback": ("无法播放", "Cannot play"),
    "error.title": ("出错了", "Something went wrong"),
    "cases.search": ("搜索", "Search"),
    "cases.query": ("案号、标题或当事人", "Number, title or party"),
    "cases.type": ("执法类型", "Enforcement type"),
    "cases.status": ("状态", "Status"),
    "cases.officer": ("执法人员", "Officer"),
    "cases.deadline": ("期限状态", "Deadline state"),
    "cases.any": ("全部", "Any"),
    "cases.number": ("案号", "Case number"),
    "cases.title": ("标题", "Title"),
    "cases.sessions": ("录制", "Sessions"),
    "cases.sensitivity": ("密级", "Sensitivity"),
    "cases.av_level": ("录像要求", "AV recording"),
    "cases.none": ("没有符合条件的案件", "No matching cases"),
    "cases.shown": ("显示 {n} / {total} 件", "Showing {n} of {total}"),
    "status.with_sessions": ("有录制", "Has recordings"),
    "status.no_sessions": ("无录制", "No recordings"),
    "status.quarantine": ("有隔离记录", "Has quarantined records"),
    "case.parties": ("当事人", "Parties"),
    "case.timeline": ("时间轴", "Timeline"),
    "case.session": ("录制", "Session"),
    "case.device": ("设备", "Device"),
    "case.start": ("开始", "Start"),
    "case.end": ("结束", "End"),
    "case.segments": ("分段", "Segments"),
    "case.markers": ("标记", "Markers"),
    "case.gaps": ("中断", "Gaps"),
    "case.gap_cause": ("原因", "Cause"),
    "case.gap_explained": ("口头说明", "Spoken reason"),
    "case.verification": ("校验", "Verification"),
    "case.verified": ("已校验", "verified"),
    "case.problems": ("有问题", "PROBLEMS"),
    "case.no_sessions": ("此案件尚无录制", "This case has no recordings yet"),
    "case.play": ("播放", "Play"),
    "case.preamble": ("开场信息", "Preamble"),
    "case.checks": ("录前检查", "Pre-capture checks"),
    "case.deadlines": ("期限", "Deadlines"),
    "case.custody": ("保管日志", "Custody log"),
    "case.export": ("导出案卷", "Export case file"),
    "case.request_approval": ("申请审批", "Request approval"),
    "meta.officers": ("执法人员", "Officers"),
    "meta.place": ("地点", "Place"),
    "meta.reason": ("事由", "Reason"),
    "meta.target": ("对象", "Target"),
    "meta.stage": ("阶段", "Stage"),
    "meta.case": ("案号", "Case"),
    "meta.spoken": ("口播内容", "Spoken preamble"),
    "play.title": ("回放", "Playback"),
    "play.jump": ("跳到分段", "Jump to segment"),
    "play.logged": ("本次播放已记入保管日志", "This playback is recorded in the custody log"),
    "inbox.title": ("待归档录制", "Unfiled sessions"),
    "inbox.file": ("归档", "File"),
    "inbox.empty": ("没有待归档的录制", "No unfiled sessions"),
    "inbox.filed": ("已归档", "Filed"),
    "assign.title": ("设备派发", "Device assignments"),
    "assign.submit": ("派发", "Assign"),
    "assign.unassign": ("撤销派发", "Unassign"),
    "assign.officers_hint": ("每行一名", "one per line"),
    "assign.done": ("已派发，设备入座时生效", "Assigned; the device receives it when docked"),
    "approvals.title": ("审批", "Approvals"),
    "approvals.purpose": ("用途", "Purpose"),
    "approvals.reason": ("理由", "Reason"),
    "approvals.request": ("申请", "Request"),
    "approvals.grant": ("批准", "Grant"),
    "approvals.refuse": ("拒绝", "Refuse"),
    "approvals.state": ("状态", "State"),
    "approvals.requested_by": ("申请人", "Requested by"),
    "approvals.decided_by": ("审批人", "Decided by"),
    "approvals.none": ("没有审批记录", "No approvals"),
    "approvals.view": ("查看音视频", "View media"),
    "approvals.export": ("导出案卷", "Export case file"),
    "export.title": ("导出案卷", "Export case file"),
    "export.download": ("下载", "Download"),
    "export.hint": (
        "案卷可用 bodycam-verify 离线校验",
        "The case file can be checked offline with bodycam-verify",
    ),
    "report.title": ("问责报告", "Accountability report"),
    "report.findings": ("问题", "Findings"),
    "report.by_kind": ("按类型", "By kind"),
    "report.none": ("没有问题", "No findings"),
    "devices.title": ("设备", "Devices"),
    "devices.last_seen": ("最后入座", "Last seen"),
    "devices.clock_offset": ("时钟偏差(秒)", "Clock offset (s)"),
    "devices.pending": ("待上传", "Pending uploads"),
    "devices.revoked": ("已吊销", "Revoked"),
    "devices.upload_by": ("上传期限", "Upload by (Art. 14)"),
    "devices.records": ("记录数", "Records"),
    "quarantine.title": ("隔离区", "Quarantine"),
    "quarantine.reason": ("原因", "Reason"),
    "quarantine.when": ("时间", "When"),
    "quarantine.waiting": ("等待处理", "waiting"),
    "quarantine.empty": ("隔离区为空", "Nothing is quarantined"),
    "custody.title": ("保管日志", "Custody log"),
    "custody.verify": ("校验", "Verify"),
    "custody.ok": ("保管日志校验通过", "The custody log verifies"),
    "custody.bad": ("保管日志校验失败", "The custody log does NOT verify"),
    "custody.when": ("时间", "When"),
    "custody.who": ("人员", "Who"),
    "custody.what": ("操作", "Action"),
    "deadline.open": ("未结案", "not concluded"),
    "deadline.ok": ("按时", "on time"),
    "deadline.late": ("逾期", "LATE"),
    "deadline.kind.file": ("形成案卷", "case file"),
    "deadline.kind.store": ("录像入库", "recording stored"),
    "deadline.when.file": ("结案日期", "concluded"),
    "deadline.when.store": ("入库时间", "stored"),
    "deadline.file-due": ("案卷待形成", "case file due"),
    "deadline.file-overdue": ("案卷逾期", "case file OVERDUE"),
    "deadline.file-formed": ("案卷已形成", "case file formed"),
    "case.gap_written": ("书面说明", "Written explanation"),
    "report.summary": (
        "{findings} 个问题，涉及 {cases} 个案件（时区 {tz}）",
        "{findings} findings over {cases} cases (time zone {tz})",
    ),
    "report.col.kind": ("问题", "Finding"),
    "report.col.article": ("条款", "Article"),
    "report.col.case": ("案号", "Case"),
    "report.col.officers": ("执法人员", "Officers"),
    "report.col.device": ("设备", "Device"),
    "report.col.when": ("时间", "When"),
    "report.col.detail": ("说明", "Detail"),
    "report.from": ("自", "From"),
    "report.to": ("至", "To"),
    "report.delays": ("存储用时与期限", "Storage delay against the deadline"),
    "report.delays_hint": (
        "条形：录制结束到入库的小时数（红色为逾期）；竖线：2个工作日期限",
        "bar: hours from the end of recording to storage (red: late); tick: the 2-working-day"
        " deadline",
    ),
    "yes": ("是", "yes"),
    "no": ("否", "no"),
}


#: names of stored codes (enforcement types, stages, labels, AV levels): code -> Chinese; the
#: English interface shows the code itself
NAMES: dict[str, str] = {
    "confirmation": "行政确认",
    "dispute": "纠纷处理",
    "hearing": "听证",
    "inspection": "行政检查",
    "interview": "询问",
    "licensing": "行政许可",
    "life-health": "涉及生命健康",
    "major-property": "涉及重大财产",
    "other": "其他",
    "penalty": "行政处罚",
    "penalty-interview": "处罚询问",
    "personal-liberty": "涉及人身自由",
    "sealing": "查封",
    "seizure": "扣押",
    "service-by-leaving": "留置送达",
    "service-by-notice": "公告送达",
    "substitute-performance": "代履行",
    "unsealing": "解封",
    "start": "启动",
    "investigation": "调查",
    "decision": "决定",
    "service": "送达",
    "execution": "执行",
    "archiving": "归档",
    "public": "公开",
    "internal": "内部",
    "personal-privacy": "个人隐私",
    "trade-secret": "商业秘密",
    "state-secret": "国家秘密",
    "mandatory": "必须录像",
    "recommended": "视情录像",
    "none": "不要求",
}


def namer(lang: str) -> Callable[[object], str]:
    """``name(code)``: the Chinese name of a stored code, or the code itself."""

    def name(code: object) -> str:
        text = "" if code is None else str(code)
        return NAMES.get(text, text) if lang == "zh" else text

    return name


def translator(lang: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``lang`` (unknown languages fall back to the default)."""
    index = LANGUAGES.index(lang) if lang in LANGUAGES else 0

    def t(key: str, **values: object) -> str:
        entry = CATALOGUE.get(key)
        text = entry[index] if entry else key
        return text.format(**values) if values else text

    return t
