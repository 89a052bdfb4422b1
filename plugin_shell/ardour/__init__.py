"""The Ardour adapter: Lua editor actions on the JSON host bridge (`sa3 ardour install`), and placing
files into a saved session's XML for headless sessions (`session_xml`). See README.md here."""
