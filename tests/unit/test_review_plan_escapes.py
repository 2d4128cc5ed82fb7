"""Review proof (au-review): the plan shows the apps' account's command lines and working folders
raw.

Since the branch, the root helper's `listeners` gives the command lines of the apps' account's
processes too (own_uids), and owners_script reads their working folder through the door: both are
the app's to set (its process title, a folder it chdir()s into). The plan puts them into PlanError
messages and the plan's `why` lines, which `fab deploy` prints as they are (Reporter.say, Exit), not
through secrets.visible: an app's escape sequences reach the operator's terminal (OSC 52 sets the
clipboard, OSC 0 the title, CSI 2J clears the screen)."""

from __future__ import annotations

from signalcraft_deploy.core.facts import HostFacts, Owner
from signalcraft_deploy.core.plan import PlanError, _takeover
from signalcraft_deploy.core.settings import load_settings

S = load_settings(environ={}, overrides={})
ESC = "\x1b]52;c;Y3VybCBldmlsfHNo\x07\x1b[2J"


def test_an_app_accounts_process_title_and_folder_reach_the_plan_error_raw() -> None:
    app = Owner(
        998, S.app_user, f"/srv/{ESC}", holds_app=False
    )  # the app's bare server, outside the app folder
    facts = HostFacts(uid=1000, user="ubuntu", owners={42: app})
    try:
        _takeover(S, facts, 42, f"python3 {ESC} app.py")
    except PlanError as err:
        assert "\x1b" not in str(err), repr(str(err))
