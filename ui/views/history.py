"""History page: every finished edit, kept on disk; reuse its settings, download or delete it."""

from ui.panels import gallery

gallery.render()
