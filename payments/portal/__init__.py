"""The merchant portal at /merchant/: who may see what (access), the
reads behind its pages (reports), the seam other apps fill in (sections), and the views."""
