"""Qt widgets, pages, dialogs and charts.

Importing the GUI installs its one way of showing failures
(:func:`app.ui.errors.report_failure`) as the default ``on_failed`` of background
tasks (:func:`app.workers.tasks.start_task`).
"""

from app.ui.errors import report_failure
from app.workers.tasks import set_failure_reporter

set_failure_reporter(report_failure)
