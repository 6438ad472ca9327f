"""An administrator checks the workers and switches an app, in place, in a browser."""
from playwright.sync_api import expect

from tests.conftest import PASSWORD
from tests.e2e.test_foundation_journey import sign_in


def test_worker_check_polls_until_done_and_app_switch(app, live_server, page, console_errors, make_user, run_jobs):
    make_user("root", admin=True)
    sign_in(page, live_server, "root", PASSWORD)
    page.goto(f"{live_server}/admin/system")
    page.get_by_role("button", name="Check the workers").click()
    expect(page.get_by_text("Waiting for a worker…")).to_be_visible()
    run_jobs()  # a real RQ worker takes the job; the partial keeps polling and shows the outcome
    expect(page.get_by_text("reached the database and Redis")).to_be_visible(timeout=10_000)

    page.get_by_role("link", name="Manage apps").click()
    switch = page.get_by_role("switch")
    expect(switch).to_have_text("On")
    page.once("dialog", lambda dialog: dialog.accept())  # switching the whole app off asks first
    switch.click()
    expect(page.get_by_role("switch")).to_have_text("Off")
    page.reload()
    expect(page.get_by_role("switch")).to_have_text("Off")
    assert console_errors == []
