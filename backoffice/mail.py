"""E-mail on a laptop: each message is written to a file under .run/emails/ and the log gets
one line saying so, instead of the whole message in the terminal."""

import logging

from django.core.mail.backends.filebased import EmailBackend as FileBackend

logger = logging.getLogger(__name__)


class SummaryFileBackend(FileBackend):
    def send_messages(self, email_messages):
        sent = super().send_messages(email_messages)
        for message in email_messages:
            logger.info(
                "e-mail to %s: %s (saved in %s)", ", ".join(message.recipients()), message.subject, self.file_path
            )
        return sent
