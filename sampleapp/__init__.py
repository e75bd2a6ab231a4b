"""The sample site: a small content site (pages and articles in SQL) that smooth-deploy ships."""
