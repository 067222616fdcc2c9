"""The merchant portal's webhook pages: urls, forms, views."""
