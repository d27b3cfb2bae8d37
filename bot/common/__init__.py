"""What every platform adapter does the same way.

A platform package (bot/telegram, bot/discord, bot/web) turns its platform's events
into `JobRequest`s and its answers into platform messages; everything between is here:
who is asking (`requests`), how options are spelled (`options`), following a job's
events into status texts and an answer (`following`), refusals (`requests.refuse`),
and the background tasks an adapter drains when it stops (`tasks`). A new platform is
one package written against these modules.
"""
