"""Message trace connector: Exchange Online message trace into Microsoft Sentinel.

The package copies Microsoft Graph ``messageTraces`` records into the Log Analytics
table ``EmailEvents_CL`` through the Logs Ingestion API, exactly once, with a
checkpoint in Azure Blob Storage. See README.md for how the pieces fit.
"""

__version__ = "0.1.0"
