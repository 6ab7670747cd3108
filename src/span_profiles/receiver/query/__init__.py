"""Query: everything read from a profile database, for the command line, the UI and the API.

* :mod:`.selection`: :class:`~.selection.Selection`, which samples a query looks at (profile
  type, service, window, span ids and names), and how a window splits into rollup hours;
* :mod:`.reader`: :class:`~.reader.ProfileReader`, the read API, on read-only connections;
* :mod:`.stacks`, :mod:`.spans`, :mod:`.samples`: the one implementation of stack counts and top
  functions, of the span list (and its naming rule), and of the samples themselves;
* :mod:`.sql`: what reads what (rollups for windows, the label index for spans);
* :mod:`.flame`: flame trees and diffs;
* :mod:`.documents`: the JSON documents the views render;
* :mod:`.exports`: the export formats, a registry.
"""
