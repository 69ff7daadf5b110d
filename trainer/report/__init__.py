"""`report.html` and its pictures: plots, thumbnails, the page style, atomic files."""
